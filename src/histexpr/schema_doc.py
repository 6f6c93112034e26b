"""``config/README.md`` from the schemas, so the description of every key cannot drift from what is validated.

``python -m histexpr.schema_doc > config/README.md`` writes it; ``tests/test_config_docs.py`` fails when the
file and the schemas differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

SCHEMAS = Path(__file__).resolve().parents[2] / "workflow" / "schemas"

HEAD = """# Configuration

Generated from `workflow/schemas/` by `python -m histexpr.schema_doc > config/README.md`; a test fails when the
two differ. A config file needs only the keys that differ from these defaults (`config/config.yaml` is the
embedded demo, `config/her2st.yaml`, `config/tcgn.yaml` and `config/lymphoma.yaml` the studies); unknown keys
and a key given twice are errors that name the file and the key. `--config key=value` sets one more on the
command line, nested values too (`--config 'folds={k: 3}'`).
"""


def _type(node: dict) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{v}`" if v != "" else '`""`' for v in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    for branch in ("anyOf", "oneOf"):
        if branch in node:
            return " or ".join(_type(b) for b in node[branch])
    t = node.get("type", "")
    if isinstance(t, list):
        return " or ".join(t)
    if t == "array" and isinstance(node.get("items"), dict):
        return f"list of {_type(node['items'])}"
    return t or "any"


def _default(node: dict) -> str:
    if "default" not in node or node.get("type") == "object":
        return ""
    return f"`{json.dumps(node['default'])}`"


def _text(node: dict) -> str:
    return " ".join(str(node.get("description", "")).split()).replace("|", "\\|")


def _rows(node: dict, prefix: str = "") -> list[str]:
    rows = []
    for key, sub in node.get("properties", {}).items():
        if not isinstance(sub, dict):
            continue
        path = f"{prefix}{key}"
        if sub.get("type") == "object" and "properties" in sub:
            if _text(sub):
                rows.append(f"| `{path}` | section | | {_text(sub)} |")
            rows += _rows(sub, path + ".")
        else:
            rows.append(f"| `{path}` | {_type(sub)} | {_default(sub)} | {_text(sub)} |")
    return rows


def render() -> str:
    parts = [HEAD]
    for name, title in (("config.schema.yaml", "Expression studies (`workflow/schemas/config.schema.yaml`)"),
                        ("classify.schema.yaml", "Classification studies, `task: classification` "
                                                 "(`workflow/schemas/classify.schema.yaml`)"),
                        ("samples.schema.yaml", "Sample sheet columns (`workflow/schemas/samples.schema.yaml`)")):
        schema = yaml.safe_load((SCHEMAS / name).read_text())
        required = ", ".join(f"`{k}`" for k in schema.get("required", []))
        parts += [f"## {title}", "", f"Required: {required}." if required else "", "",
                  "| key | type | default | meaning |", "|---|---|---|---|", *_rows(schema), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
