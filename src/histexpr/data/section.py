"""One section, from the user's files to tiled windows: every check of the tile rule, in order.

1. counts, spots and their join (:func:`histexpr.io.sheet.read_sample`), spot QC by total count;
2. the image: readable, not a placeholder, small enough to decode if it is not a pyramid;
3. spots on the image, the pixel size (sheet, Visium scale factors, image metadata, else the array grid) and
   its cross-check against the array grid;
4. spots on the tissue (:func:`histexpr.data.tiling.spot_placement`), with the likely mistake named;
5. a window per spot; edge and background windows dropped and counted.

Every failure is one :class:`~histexpr.errors.InputError` naming the user's file, raised before any window is
cut; what was dropped is counted in ``uns["tiling"]`` and drawn in the spot-QC figure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import InputError
from ..io.image import DEFAULT_MAX_MEGAPIXELS, open_image
from ..io.sheet import read_sample
from .expression import low_count_spots
from .tiling import (
    GRIDS,
    GridEstimate,
    check_spots_on_image,
    detect_st_design,
    estimate_grid,
    estimate_um_per_px,
    grid_pitch_um,
    spot_placement,
    tile_spots,
    tissue_mask,
)

log = logging.getLogger(__name__)

SPOT_DIAMETER_UM = {"st": 100.0, "visium": 55.0}  # 1k and 2k arrays alike; Visium HD: tiling.spot_um


def spot_diameter_um(row: dict, adata: ad.AnnData) -> float:
    """A spot's diameter (a Visium HD pseudo-spot's side) in micrometres."""
    return float(adata.uns["spot_um"]) if "spot_um" in adata.uns else SPOT_DIAMETER_UM[row["format"]]
GRID_ANISOTROPY_WARN = 0.05  # warn when the grid's x and y um/px differ by more than this
UPSAMPLE_WARN = 2.0  # warn when windows are upsampled more than this
EXIF_TURNS = {2: "mirrored left-right", 3: "turned 180 degrees", 4: "mirrored top-bottom", 5: "transposed",
              6: "turned 90 degrees clockwise", 7: "transversed", 8: "turned 90 degrees anticlockwise"}
DROP_REASONS = ("unselected", "outside_tissue", "no_counts", "no_position", "low_counts", "edge", "background")


@dataclass
class TiledSection:
    adata: ad.AnnData  # kept spots: raw counts, obsm["spatial"], uns["spatial"] (thumbnail), uns["tiling"]
    windows: np.ndarray  # (n_kept, S, S, 3) uint8
    spots: pd.DataFrame  # every spot drawn in the QC figure: spot, x, y, status (kept or a drop reason)
    thumbnail: np.ndarray
    thumb_scale: float


def array_design(row: dict, adata: ad.AnnData, sheet: str | None = None) -> tuple[str, str]:
    """``(platform, why)``: the array design of a section, from the sample sheet's ``platform`` column when set
    (checked against the coordinates), else read off the array coordinates (:func:`detect_st_design`). That a
    platform belongs to the row's format is checked with the sheet (:func:`histexpr.io.sheet.complete_sheet`)."""
    given = row.get("platform") or None
    if row["format"] == "hest" and "platform" in adata.uns:
        return given or adata.uns["platform"], ("sample sheet" if given else
                                                f"HEST st_technology {adata.uns['hest']['st_technology']}")
    if row["format"] == "spatialdata":
        return given, "sample sheet"
    if row["format"] not in ("st", "hest"):
        return row["format"], "sample sheet format"
    found = detect_st_design(adata.obs["array_x"], adata.obs["array_y"])
    if given is None:
        return found.platform, f"detected: {found.why}"
    if given == "st_2k":
        contradicts = found.axis_pairs > 0 or found.parity_share < 0.99
    else:
        contradicts = found.platform == "st_2k"
    if contradicts:
        raise InputError(sheet or row["spots"], f"row of sample {row['sample']!r}: platform {given!r}, but the "
                                                f"array coordinates in {row['spots']} are a "
                                                f"{'1k' if given == 'st_2k' else '2k'} design ({found.why}; "
                                                f"{100 * found.parity_share:.0f}% of spots share the parity of "
                                                f"x + y); fix or remove the platform value")
    return given, "sample sheet"


def pixel_size(row: dict, adata: ad.AnnData, slide, platform: str,
               spot_pitch_um: dict) -> tuple[float, str, GridEstimate | None]:
    """``(um_per_px, source, grid estimate)``: the sheet, the Visium scale factors, the image's metadata, else
    the array grid of the section's design (neighbour distances, or an affine fit for sparse subsets)."""
    xy = np.asarray(adata.obsm["spatial"])
    step, nn = grid_pitch_um(platform, spot_pitch_um)
    grid = estimate_grid(adata.obs["array_x"], adata.obs["array_y"], xy, platform, step)
    if grid is None and len(xy) > 1:
        grid = GridEstimate(estimate_um_per_px(xy, nn), "nearest spot")
    if row.get("um_per_px"):
        return float(row["um_per_px"]), "sample sheet", grid
    if "um_per_px" in adata.uns:
        return float(adata.uns["um_per_px"]), adata.uns.get("um_per_px_source", "Visium scale factors"), grid
    if slide.mpp:
        return slide.mpp, "image metadata", grid
    if grid:
        return grid.um_per_px, f"array grid ({platform}, {step:g} um a step)", grid
    raise InputError(row["spots"], "a single spot and no pixel size; set um_per_px in the sample sheet")


def _misplaced_figure(thumb, scale, mask, xy, row, um_per_px, path, spot_um) -> None:
    """The QC figure of a section that failed the placement check: each spot on or off the tissue."""
    from scipy import ndimage

    from ..plots import spot_qc_figure

    r = max(1, int(round(spot_um / 2 / um_per_px * scale)))
    grown = ndimage.binary_dilation(mask, iterations=r)
    xt = np.round(xy * scale).astype(int)
    inside = (xt[:, 0] >= 0) & (xt[:, 1] >= 0) & (xt[:, 0] < mask.shape[1]) & (xt[:, 1] < mask.shape[0])
    on = np.zeros(len(xy), bool)
    on[inside] = grown[xt[inside, 1], xt[inside, 0]]
    spots = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "status": np.where(on, "on_tissue", "off_tissue")})
    spot_qc_figure(thumb, scale, spots, spot_um / um_per_px, 0.0,
                   f"{row['sample']}: FAILED the placement check, {100 * on.mean():.0f}% of spots on tissue", path)


def tile_section(row: dict, tiling: dict, min_counts: float = 0.0, qc_on_failure: str | None = None,
                 sheet: str | None = None) -> TiledSection:
    """Read, check and tile one sample-sheet row (see the module docstring).

    Args:
        row: a validated sheet row (``sample``, ``patient``, ``image``, ``counts``, ``spots``, ``format``,
            ``um_per_px``, ``pixel_scale``).
        tiling: the config's ``tiling`` block.
        min_counts: spot QC (``expression.min_counts``).
        qc_on_failure: where to draw the spots (on or off the tissue) when the placement check fails.
        sheet: the user's sample sheet, named in errors about a row's values.
    """
    sample = row["sample"]
    adata, image = read_sample(row, tiling)  # validates counts, spots and their join before any pixel is decoded
    drawn = [adata.uns.pop("dropped_spots")]
    n_spots = adata.n_obs
    if not adata.X.sum() > 0:
        raise InputError(row["counts"], f"every count of the {n_spots} placed spot(s) is 0: an empty or failed "
                                        f"library; remove sample {sample!r} from the sheet")
    low = low_count_spots(adata, min_counts)
    if low.all():
        raise InputError(row["counts"], f"every spot has fewer than {min_counts:g} counts; lower "
                                        f"expression.min_counts")
    if low.any():
        log.info("%s: %d spot(s) dropped (fewer than %g counts): %s", sample, int(low.sum()), min_counts,
                 ", ".join(adata.obs_names[low]))
        xy_low = np.asarray(adata.obsm["spatial"])[low]
        drawn.append(pd.DataFrame({"spot": adata.obs_names[low], "reason": "low_counts",
                                   "x": xy_low[:, 0], "y": xy_low[:, 1]}))
        adata = adata[~low].copy()
    xy = np.asarray(adata.obsm["spatial"])
    platform, platform_why = array_design(row, adata, sheet)
    spot_um = spot_diameter_um(row, adata)
    spot_pitch_um = {**tiling["spot_pitch_um"], "visium_hd": spot_um, "xenium": spot_um}  # pseudo-spots, edge to edge
    if "spot_pitch_um" in adata.uns and platform != "st_2k":  # HEST's inter_spot_dist
        spot_pitch_um[GRIDS[platform][0]] = float(adata.uns["spot_pitch_um"])
    pitch = grid_pitch_um(platform, spot_pitch_um)[1]  # um between nearest spots
    log.info("%s: array design %s (%s)", sample, platform, platform_why)
    with open_image(image) as slide:
        slide.check_size(tiling.get("max_image_megapixels", DEFAULT_MAX_MEGAPIXELS))
        check_spots_on_image(xy, slide.width, slide.height, row["spots"], image)
        um_per_px, source, grid = pixel_size(row, adata, slide, platform, spot_pitch_um)
        g = grid.um_per_px if grid else None
        log.info("%s: %.4f um/px from %s (array grid suggests %s); image %s (%s)", sample, um_per_px, source,
                 f"{g:.4f} by {grid.method}" if grid else "n/a", image, adata.uns.get("image_source", "sample sheet"))
        if g and abs(g / um_per_px - 1) > 0.2:
            log.warning("%s: pixel size from %s (%.4f um/px) differs from the array grid's (%.4f) by %.0f%%; "
                        "check um_per_px and pixel_scale", sample, source, um_per_px, g, 100 * abs(g / um_per_px - 1))
        if grid and grid.anisotropy > GRID_ANISOTROPY_WARN:
            log.warning("%s: the spot grid is stretched: %.3f um/px along array x, %.3f along y (%.0f%% apart); "
                        "windows use %.4f um/px on both axes; check the spot file's pixel coordinates", sample,
                        grid.x_um_per_px, grid.y_um_per_px, 100 * grid.anisotropy, um_per_px)
        side = tiling["window_um"] / um_per_px
        if side < tiling["window_px"] / UPSAMPLE_WARN:
            log.warning("%s: a %.0f um window is %.1f px of %s; windows are upsampled %.1fx to %d px (blurred; "
                        "a higher-resolution image or a smaller tiling.window_px avoids it)", sample,
                        tiling["window_um"], side, image, tiling["window_px"] / side, tiling["window_px"])
    with open_image(image, check_decode=True) as slide:
        thumb, thumb_scale = slide.thumbnail(tiling["thumbnail_px"])
        if float(thumb.reshape(-1, 3).astype(np.float32).std(axis=0).max()) < 1.0:
            raise InputError(image, "the image is blank (every pixel the same colour): a placeholder, not an "
                                    "H&E scan")
        mask = tissue_mask(thumb)
        placement = spot_placement(mask, thumb_scale, xy, spot_um / 2 / um_per_px,
                                   pitch / um_per_px, (slide.width, slide.height))
        log.info("%s: %.0f%% of spot centres on tissue; the spots cover %.0f%% of the tissue (%.0f%% of the "
                 "image is tissue)", sample, 100 * placement.on_tissue, 100 * placement.coverage,
                 100 * placement.tissue_area)
        orientation = slide.exif_orientation
        turned = ""
        if orientation != 1:
            turned = (f"; {image} carries EXIF orientation {orientation} ({EXIF_TURNS.get(orientation, 'turned')} "
                      f"for display): histexpr reads the pixels as stored, so spot coordinates taken on the displayed "
                      f"(turned) image do not fit; save the image turned, without the tag")
            log.warning("%s: %s", sample, turned[2:])
        limit = float(tiling.get("min_spots_on_tissue", 0.75))
        if placement.tissue_area < 0.002:
            log.warning("%s: no stained tissue found on %s's thumbnail; spot placement not checked", sample, image)
        elif placement.on_tissue < limit or (placement.alternative and placement.on_tissue < 0.95 and limit > 0):
            alt = (f"; the spots fit with {placement.alternative[0]} ({100 * placement.alternative[1]:.0f}% on "
                   f"tissue)" if placement.alternative else "")
            figure = ""
            if qc_on_failure:
                _misplaced_figure(thumb, thumb_scale, mask, xy, row, um_per_px, qc_on_failure, spot_um)
                figure = f"; the spots on the slide: {qc_on_failure}"
            raise InputError(row["spots"], f"only {100 * placement.on_tissue:.0f}% of the {len(xy)} spot centres "
                                           f"lie on tissue in {image} (tiling.min_spots_on_tissue = {limit:g}){alt}. "
                                           f"Likely causes: pixel_x/pixel_y swapped, a wrong pixel_scale, or the "
                                           f"wrong image for these spots{figure}{turned}")
        res = tile_spots(slide, xy, um_per_px, tiling["window_um"], tiling["window_px"], tiling["min_tissue"],
                         desc=f"tiling {sample}")
    c = {**res.counts, "input": n_spots, "low_counts": int(low.sum())}
    for reason in DROP_REASONS[:4]:
        c[reason] = int((drawn[0]["reason"] == reason).sum())
    log.info("%s: %d spots, %d kept, %d dropped (%d below %g counts, %d window off the image edge, %d background "
             "below %.0f%% tissue); %d unselected/outside-tissue, %d no counts, %d no position; window %.1f px at "
             "level 0 -> %d px", sample, c["input"], c["kept"], c["input"] - c["kept"], c["low_counts"], min_counts,
             c["edge"], c["background"], 100 * tiling["min_tissue"], c["unselected"] + c["outside_tissue"],
             c["no_counts"], c["no_position"], res.window_size_px, tiling["window_px"])
    if c["kept"] == 0:
        raise InputError(image, "no spot window kept (all off the image or on background); check the image and "
                                "pixel size, or lower tiling.min_tissue")
    for status in ("edge", "background"):
        dropped = adata.obs_names[res.status == status]
        if len(dropped):
            log.info("%s spots dropped (%s): %s", sample, status, ", ".join(dropped))
    spots = pd.concat([pd.DataFrame({"spot": adata.obs_names, "x": xy[:, 0], "y": xy[:, 1],
                                     "reason": res.status})] + drawn, ignore_index=True)

    out = adata[res.kept].copy()
    out.obs["tissue_fraction"] = res.tissue[res.kept]
    out.obs["sample"] = sample
    out.obs["patient"] = row["patient"]
    out.obs_names = [f"{sample}_{s}" for s in out.obs["spot"]]
    out.uns["spatial"] = {sample: {
        "images": {"hires": thumb},
        "scalefactors": {"tissue_hires_scalef": thumb_scale,
                         "spot_diameter_fullres": spot_um / um_per_px},
        "metadata": {"source_image_path": image},
    }}
    out.uns["source"] = {"counts": row["counts"], "spots": row["spots"], "image": image}
    out.uns["tiling"] = {**{k: int(v) for k, v in c.items()}, "um_per_px": um_per_px, "um_per_px_source": source,
                         "image_source": adata.uns.get("image_source", "sample sheet"),
                         "spots_on_tissue": placement.on_tissue, "tissue_covered": placement.coverage,
                         "platform": platform, "platform_source": platform_why,
                         "grid_um_per_px": float(grid.um_per_px) if grid else float("nan"),
                         "grid_x_um_per_px": float(grid.x_um_per_px) if grid and grid.x_um_per_px else float("nan"),
                         "grid_y_um_per_px": float(grid.y_um_per_px) if grid and grid.y_um_per_px else float("nan"),
                         "window_um": float(tiling["window_um"]), "window_px": int(tiling["window_px"]),
                         "window_size_level0_px": float(res.window_size_px), "min_tissue": float(tiling["min_tissue"]),
                         "min_counts": float(min_counts), "spot_um": spot_um}
    if "bins" in adata.uns:  # Visium HD: how the bins were pooled
        out.uns["tiling"].update({f"bins_{k}": v for k, v in adata.uns["bins"].items()})
    out.uns.pop("dropped_spots", None)
    out.uns.pop("image_source", None)
    return TiledSection(out, res.windows, spots.rename(columns={"reason": "status"}), thumb, thumb_scale)
