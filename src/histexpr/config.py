"""Validation of configuration dictionaries and sample sheets against JSON schemas.

Schemas are YAML files (``workflow/schemas/``) in JSON-schema draft 7. Defaults
declared in a schema are filled in, then the document is validated; the first
error becomes one :class:`~histexpr.errors.ConfigError` that names the source
file and the offending key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last, silently)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(loader.name, f"key {key!r} appears twice in one section (lines {seen[key]} and "
                                           f"{key_node.start_mark.line + 1}); YAML would keep the last silently")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def check_yaml_file(path: str | Path) -> None:
    """Refuse a config file that gives one key twice in a section, naming the file, the key and the lines."""
    with open(path) as fh:
        loader = _StrictLoader(fh)
        loader.name = str(path)
        try:
            loader.get_single_data()
        finally:
            loader.dispose()


def load_schema(path: str | Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def _fill_defaults(node: Any, schema: dict) -> Any:
    """Recursively insert ``default`` values of object properties."""
    if not isinstance(schema, dict):
        return node
    if node is None and "default" in schema:
        node = copy.deepcopy(schema["default"])
    if isinstance(node, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in node and isinstance(sub, dict) and "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
            if key in node:
                node[key] = _fill_defaults(node[key], sub)
    for branch in ("oneOf", "anyOf"):
        for sub in schema.get(branch, []):
            if isinstance(node, dict) and sub.get("type") == "object":
                try:
                    jsonschema.validate(node, sub)
                except jsonschema.ValidationError:
                    continue
                node = _fill_defaults(node, sub)
                break
    return node


def _yaml_words(node: Any, schema: dict) -> Any:
    """YAML 1.1 reads unquoted ``off``/``on``/``yes``/``no`` as booleans; where a setting's allowed values
    are those words, give the word back (``lpips: off`` means "off", not false)."""
    if not isinstance(schema, dict):
        return node
    if isinstance(node, bool) and "enum" in schema:
        words = {False: ("off", "no", "false"), True: ("on", "yes", "true")}[node]
        for word in words:
            if word in schema["enum"]:
                return word
    if isinstance(node, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in node:
                node[key] = _yaml_words(node[key], sub)
    return node


def _from_strings(node: Any, schema: dict) -> Any:
    """Snakemake's ``--config key={a: 2}`` hands nested values over as strings; where the schema wants a
    number or a boolean and the string is one, use the value (``"2"`` -> 2). Anything else is left for the
    schema to report."""
    if not isinstance(schema, dict):
        return node
    types = schema.get("type")
    types = [types] if isinstance(types, str) else (types or [])
    branches = schema.get("oneOf", []) + schema.get("anyOf", [])
    if isinstance(node, str) and branches:  # e.g. folds.k: an integer or "loo"
        if any(jsonschema.Draft7Validator(b).is_valid(node) for b in branches):
            return node
        for b in branches:
            value = _from_strings(node, b)
            if value is not node and jsonschema.Draft7Validator(b).is_valid(value):
                return value
        return node
    if isinstance(node, str) and "string" not in types:
        if "integer" in types and node.strip().lstrip("+-").isdigit():
            return int(node)
        if "number" in types:
            try:
                return float(node)
            except ValueError:
                pass
        if "boolean" in types and node.strip().lower() in ("true", "false"):
            return node.strip().lower() == "true"
    if isinstance(node, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key in node:
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                node[key] = _from_strings(node[key], sub)
    if isinstance(node, list) and isinstance(schema.get("items"), dict):
        node = [_from_strings(v, schema["items"]) for v in node]
    return node


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 14]}... ({len(str(value))} characters)"


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if "x-message" in error.schema and error.validator in ("pattern", "type", "maxLength"):
        return f"{where}: {_short(error.instance)} {error.schema['x-message']}"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return (f"unknown key {', '.join(repr(e) for e in extra)} in {where}; "
                f"allowed keys: {', '.join(allowed)}")
    return f"{where}: {error.message}"


def validate(document: dict, schema: dict | str | Path, source: str, overrides: dict | None = None) -> dict:
    """Fill defaults and validate ``document``; return the completed copy.

    Raises :class:`ConfigError` naming ``source`` and the first problem found; ``overrides`` are the
    top-level keys set on the command line (``--config``), named as the source of their own errors.
    """
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    if not isinstance(document, dict):
        raise ConfigError(source, f"expected a mapping of settings, got {type(document).__name__}")
    doc = _from_strings(_yaml_words(_fill_defaults(copy.deepcopy(document), schema), schema), schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        top = next(iter(best.absolute_path), None)
        if overrides and top in overrides:
            source = f"--config {top}=..."
        raise ConfigError(source, _describe(best))
    return doc


def _sorted(node: Any) -> Any:
    """Mappings with their keys in sorted order, all the way down (lists keep theirs)."""
    if isinstance(node, dict):
        return {k: _sorted(node[k]) for k in sorted(node, key=str)}
    if isinstance(node, list):
        return [_sorted(v) for v in node]
    return node


def workflow_config(config: dict, schema: str | Path, configfiles: list, overrides: dict | None = None) -> dict:
    """The workflow's config, checked and completed: each config file free of keys given twice, the document
    validated with defaults filled (:func:`validate`), every mapping's keys sorted, so that a rule's params do
    not change when a file lists the same keys in another order."""
    for path in configfiles:
        check_yaml_file(path)
    doc = validate(config, schema, ", ".join(map(str, configfiles)) or "config", overrides=overrides)
    return _sorted(doc)


def validate_records(records: list[dict], schema: dict | str | Path, source: str) -> list[dict]:
    """Validate each row of a table (e.g. a sample sheet) against a row schema."""
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    out = []
    for i, rec in enumerate(records):
        clean = {k: v for k, v in rec.items() if v is not None and v == v and v != ""}
        try:
            out.append(validate(clean, schema, source))
        except ConfigError as err:
            raise ConfigError(source, f"row {i + 1} (sample {_short(rec.get('sample', '?'), 40)}): {err.problem}") from None
    return out
