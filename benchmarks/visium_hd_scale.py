"""One Visium HD slide at full size: pool, tile, store and search ~165,000 pseudo-spots on 2 cores.

A 6.5 x 6.5 mm capture area at 16 um is 406 x 406 = 164,836 bins. The benchmark writes such a Space Ranger
output (``binned_outputs/square_016um/``: filtered matrix with Poisson counts of ``--genes`` genes, every bin's
position, scale factors) over a generated pyramidal H&E TIFF (benchmarks/ats_wsi.py's texture, a tissue disc),
then times each stage of the tile rule on it and the exemplar search a fold would run:

* ``pool``: ``read_visium_hd_sample`` (read the bins, pool them into ``--spot-um`` pseudo-spots);
* ``tile``: ``tile_section`` (every check, then a window per pseudo-spot; the windows are held in memory);
* ``store``: ``write_windows`` in the ``--store`` format;
* ``search``: the ``hnsw`` exemplar index on synthetic 512-d embeddings, one per pseudo-spot (scale.py's).

Each row gives wall seconds and the process's peak memory so far: ``peak_GB`` resident (``ru_maxrss``, which
counts the pages of memory-mapped windows the kernel may drop) and ``peak_anon_GB`` what the process itself holds
(``RssAnon``, sampled). Above 2 GiB the windows are cut into an unlinked temporary file (histexpr.data.tiling).

    python benchmarks/visium_hd_scale.py              # 6.5 mm, 16 um bins and pseudo-spots (~13 min on 2 cores)
    python benchmarks/visium_hd_scale.py --quick      # 1 mm: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))


def peak_gb() -> float:
    """Peak resident memory so far (``ru_maxrss``, kB on Linux), file-backed pages (memory-mapped windows,
    which the kernel can drop) included."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


class AnonPeak:
    """Peak anonymous resident memory (``RssAnon`` of /proc/self/status, sampled every 0.2 s): what the process
    itself holds, without the page cache of memory-mapped files."""

    def __init__(self):
        import threading

        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.2):
            self.peak_kb = max(self.peak_kb, self.now_kb())

    @staticmethod
    def now_kb() -> int:
        try:
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
        except (OSError, StopIteration):
            return 0

    def gb(self) -> float:
        self.peak_kb = max(self.peak_kb, self.now_kb())
        return self.peak_kb / 1e6


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side-mm", type=float, default=6.5)
    p.add_argument("--bin-um", type=int, default=16)
    p.add_argument("--spot-um", type=float, default=16.0)
    p.add_argument("--um-per-px", type=float, default=1.0, help="the H&E's pixel size")
    p.add_argument("--window-um", type=float, default=112.0)
    p.add_argument("--window-px", type=int, default=224, help="the config default (tiling.window_px)")
    p.add_argument("--store", choices=["npy", "jpeg"], default="jpeg")
    p.add_argument("--genes", type=int, default=200)
    p.add_argument("--tissue-radius", type=float, default=0.56,
                   help="the tissue disc's radius over the slide's side (0.56: tissue on ~92%% of the capture area)")
    p.add_argument("--quick", action="store_true", help="a 1 mm area: the CI smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.side_mm = 1.0

    from ats_wsi import write_slide
    from scale import search_row

    from histexpr.data.section import tile_section
    from histexpr.data.windows import write_windows
    from histexpr.io.visium_hd import read_visium_hd_sample

    rows, anon = [], AnonPeak()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        size_px = int(round(args.side_mm * 1000 / args.um_per_px))
        t0 = time.perf_counter()
        write_slide(str(tmp / "he.tif"), size_px, args.tissue_radius)
        n_bins, n_tissue = write_hd_output(tmp / "outs", args.side_mm, args.bin_um, args.um_per_px, size_px, args.genes,
                                           args.tissue_radius)
        print(f"wrote a {size_px} x {size_px} px H&E and {n_bins:,} bins of {args.bin_um} um ({n_tissue:,} under "
              f"tissue) in {time.perf_counter() - t0:.0f} s", flush=True)

        t0 = time.perf_counter()
        a = read_visium_hd_sample(tmp / "outs", args.bin_um, args.spot_um)
        rows.append({"stage": "pool", "items": a.n_obs, "seconds": time.perf_counter() - t0, "peak_GB": peak_gb(),
                     "peak_anon_GB": anon.gb()})

        row = {"sample": "HD", "patient": "P", "image": str(tmp / "he.tif"), "counts": str(tmp / "outs"),
               "spots": str(tmp / "outs"), "format": "visium_hd", "platform": "", "um_per_px": None,
               "pixel_scale": 1.0, "split": ""}
        tiling = {"window_um": args.window_um, "window_px": args.window_px, "min_tissue": 0.1,
                  "spot_pitch_um": {"st": 200.0, "st_2k": 100.0, "visium": 100.0}, "thumbnail_px": 1000,
                  "min_spots_on_tissue": 0.75, "max_image_megapixels": 1000, "bin_um": args.bin_um,
                  "spot_um": args.spot_um}
        t0 = time.perf_counter()
        sec = tile_section(row, tiling)
        rows.append({"stage": "tile", "items": len(sec.windows), "seconds": time.perf_counter() - t0,
                     "peak_GB": peak_gb(), "peak_anon_GB": anon.gb()})
        t0 = time.perf_counter()
        stats = write_windows(sec.windows, str(tmp / f"windows.{'h5' if args.store == 'jpeg' else 'npy'}"),
                              args.store, 90)
        rows.append({"stage": f"store ({args.store})", "items": stats["n"], "seconds": time.perf_counter() - t0,
                     "peak_GB": peak_gb(), "peak_anon_GB": anon.gb(), "MB": stats["bytes"] / 1e6})
        n = len(sec.windows)
        del sec
        t0 = time.perf_counter()
        res = search_row(n, ["hnsw"], exact_queries=min(n, 2000))
        rows.append({"stage": "search (hnsw, k = 9)", "items": n, "seconds": time.perf_counter() - t0,
                     "peak_GB": peak_gb(), "peak_anon_GB": anon.gb(), "recall@9": res.get("hnsw_recall@9")})
    table = pd.DataFrame(rows)
    print(f"Visium HD, {args.side_mm:g} x {args.side_mm:g} mm at {args.bin_um} um bins, {args.spot_um:g} um pseudo-spots, "
          f"{args.window_um:g} um windows of {args.window_px} px, {os.cpu_count()} cores:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


def write_hd_output(out: Path, side_mm: float, bin_um: int, um_per_px: float, size_px: int, genes: int,
                    radius: float = 0.4, seed: int = 0) -> tuple[int, int]:
    """``out/binned_outputs/square_XXXum/`` over the slide: every bin's position, the tissue disc's bins (``radius``
    of the side, as the slide's) in the filtered matrix with Poisson counts."""
    import h5py

    rng = np.random.default_rng(seed)
    n = int(side_mm * 1000 // bin_um)
    rows, cols = (a.ravel() for a in np.mgrid[:n, :n])
    bin_px = bin_um / um_per_px
    x, y = (cols + 0.5) * bin_px, (rows + 0.5) * bin_px
    tissue = (x - size_px / 2) ** 2 + (y - size_px / 2) ** 2 < (radius * size_px) ** 2
    folder = out / "binned_outputs" / f"square_{bin_um:03d}um"
    (folder / "spatial").mkdir(parents=True)
    barcodes = np.array([f"s_{bin_um:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols)])
    pd.DataFrame({"barcode": barcodes, "in_tissue": tissue.astype(np.int32), "array_row": rows, "array_col": cols,
                  "pxl_row_in_fullres": y, "pxl_col_in_fullres": x}).to_parquet(folder / "spatial" /
                                                                                "tissue_positions.parquet")
    m = sp.random(int(tissue.sum()), genes, density=0.1, random_state=seed, format="csr",
                  data_rvs=lambda k: rng.poisson(3, k) + 1).astype(np.int32)
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:
        g = f.create_group("matrix")
        g["barcodes"] = np.array([b.encode() for b in barcodes[tissue]])
        g["data"], g["indices"], g["indptr"] = m.data, m.indices.astype(np.int64), m.indptr.astype(np.int64)
        g["shape"] = np.array([genes, m.shape[0]], np.int32)
        ft = g.create_group("features")
        ft["_all_tag_keys"] = np.array([b"genome"])
        ft["feature_type"] = np.array([b"Gene Expression"] * genes)
        ft["genome"] = np.array([b"GRCh38"] * genes)
        ft["id"] = np.array([f"G{i:05d}".encode() for i in range(genes)])
        ft["name"] = np.array([f"GENE{i}".encode() for i in range(genes)])
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(
        {"microns_per_pixel": um_per_px, "bin_size_um": float(bin_um), "spot_diameter_fullres": bin_px,
         "tissue_hires_scalef": 0.1, "tissue_lowres_scalef": 0.01}))
    return len(rows), int(tissue.sum())


if __name__ == "__main__":
    main()
