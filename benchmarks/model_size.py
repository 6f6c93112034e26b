"""Parameters and forward FLOPs per image of every registered neural model, at the papers' sizes.

    python benchmarks/model_size.py                  # the papers' sizes (224 px; EGN's released 256 px)
    python benchmarks/model_size.py --preset tiny    # the CPU test presets (a smoke run)

FLOPs are counted by ``torch.utils.flop_counter`` (2 per multiply-add, matrix
multiplications, convolutions and attention) for one image in evaluation mode;
element-wise operations are not counted. Papers quote multiply-adds (MACs) as
"FLOPs": halve our column to compare. Reference sizes from the papers and
the authors' code are printed beside ours. Prints a table; no thresholds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from histexpr.models import get_model  # noqa: E402
from histexpr.models.cyclemlp import B2  # noqa: E402
from histexpr.models.mpvit import BASE  # noqa: E402

VIT_B = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0)
# model: (params, img px, genes, d_code, reference size in millions or None, where the reference comes from)
PAPER = {
    "tcgn": ({}, 224, 785, None, 22.6, "authors' code (lugia-xiao/TCGN), 785 genes"),
    "stnet": ({}, 224, 250, None, 7.0, "DenseNet-121: 8.0 M with its 1000-class head; 2.9 GMACs"),
    "nsl": ({}, 224, 250, None, None, ""),
    "vit": (VIT_B, 224, 250, None, 86.6, "ViT-B/16 with its 1000-class head; 17.6 GMACs"),
    "cyclemlp": (B2, 224, 250, None, 26.8, "CycleMLP-B2 with its 1000-class head; 3.9 GMACs"),
    "mpvit": (BASE, 224, 250, None, 74.8, "MPViT-Base with its 1000-class head; 16.4 GMACs"),
    "retro": ({**VIT_B, "n_exemplars": 9}, 224, 250, 512, None, ""),
    "vitexp": ({**VIT_B, "n_exemplars": 9}, 224, 250, 512, None, ""),
    "egn": (dict(patch_size=32, embed_dim=1024, depth=8, num_heads=16, mlp_ratio=4.0, eb_heads=8, eb_head_dim=64,
                 frequency=2, n_exemplars=9), 256, 250, 512, None, "EGN's released configuration"),
}
TINY = {
    "tcgn": ({"embed_dims": [16, 32, 48, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4], "fc_dim": 64,
              "gnn_out": 16}, 64, 20, None, None, ""),
    "nsl": ({}, 64, 20, None, None, ""),
    "cyclemlp": ({"embed_dims": [16, 32, 48, 64], "depths": [1, 1, 1, 1]}, 64, 20, None, None, ""),
    "mpvit": ({"embed_dims": [16, 32, 48, 64], "depths": [1, 1, 1, 1], "paths": [2, 2, 2, 2]}, 64, 20, None, None, ""),
    "retro": ({"embed_dim": 48, "depth": 2, "num_heads": 2, "n_exemplars": 5}, 64, 20, 16, None, ""),
    "vitexp": ({"embed_dim": 48, "depth": 2, "num_heads": 2, "n_exemplars": 5}, 64, 20, 16, None, ""),
    "egn": ({"embed_dim": 48, "depth": 2, "num_heads": 2, "n_exemplars": 5, "eb_heads": 2, "eb_head_dim": 8,
             "frequency": 1}, 64, 20, 16, None, ""),
}


def one_image(img: int, genes: int, d_code: int | None, k: int = 9) -> dict:
    d = d_code or 16
    return {"image": torch.randn(1, 3, img, img), "embedding": torch.randn(1, d),
            "exemplar_embedding": torch.randn(1, k, d), "exemplar_target": torch.rand(1, k, genes),
            "exemplar_mask": torch.ones(1, k, dtype=torch.bool)}


def measure(name: str, params: dict, img: int, genes: int, d_code: int | None) -> tuple[int, float]:
    model = get_model(name).factory(genes, params, img_size=img, d_code=d_code).eval()
    n = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with counter:  # grad mode on: the counter's module tracker needs it
        model(one_image(img, genes, d_code, params.get("n_exemplars", 9)))
    return n, counter.get_total_flops()


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["paper", "tiny"], default="paper")
    ap.add_argument("--models", nargs="*", help="a subset (default: all of the preset)")
    args = ap.parse_args(argv)
    table = PAPER if args.preset == "paper" else TINY
    rows = []
    for name in args.models or list(table):
        params, img, genes, d_code, ref, source = table[name]
        n, flops = measure(name, params, img, genes, d_code)
        rows.append({"model": name, "img_px": img, "genes": genes, "params_M": round(n / 1e6, 2),
                     "GFLOPs_per_image": round(flops / 1e9, 3),
                     "reference_M": "" if ref is None else ref, "reference": source})
    out = pd.DataFrame(rows)
    print(out.to_string(index=False))
    return out


if __name__ == "__main__":
    main()
