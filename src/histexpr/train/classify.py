"""Training and evaluation of the megapixel classifiers (attention sampling, uniform sampling, view CNN).

Images of one study share a size and sit in memory as uint8; each batch is
augmented (flips, brightness/contrast jitter), downscaled to the view by area
averaging, and the sampled patches are gathered from the full-resolution batch
by index. The attention-sampling model's two networks have their own Adam
optimisers (the attention's with β1 = ``attention_beta1``, 0.999 in the seed);
one backward pass gives each its own gradient (see :meth:`step_loss`). The
epoch kept is the one with the best validation accuracy (ties: lower
validation loss); test images are never looked at during training.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.megapixel import patch_corners, view_shape
from ..models.ats import AttentionSampling, log_prob_without_replacement, neg_entropy
from ..utils import FromDict, duration, log_epoch, progress
from .selection import BestEpoch

log = logging.getLogger(__name__)


@dataclass
class ClassifyConfig(FromDict):
    epochs: int = 60
    batch_size: int = 16
    lr: float = 3e-3
    attention_lr: float = 2e-2
    attention_beta1: float = 0.9
    baseline_momentum: float = 0.9
    patience: int = 60
    weight_decay: float = 1e-4
    warmup_epochs: int = 3
    schedule: str = "cosine"
    augment: bool = True
    flips: bool = True
    rotate: bool = True
    colour_jitter: float = 0.1
    view_scale: float = 0.25
    seed: int = 0
    eval_seed: int = 1234
    draws: int = 10
    device: str = "auto"


def load_images(paths: list[str]) -> np.ndarray:
    """``(n, H, W, 3)`` uint8; all images must share one size (training batches them)."""
    from ..data.megapixel import ArrayImage
    from ..errors import InputError

    arrays = [ArrayImage.open(p).array for p in tqdm(paths, desc="load images", mininterval=5.0)]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape
        odd = next(p for p, a in zip(paths, arrays) if a.shape != first)
        raise InputError(odd, f"is {arrays[paths.index(odd)].shape[:2]} px but {paths[0]} is {first[:2]}; "
                              "training batches need one image size (resize them first)")
    return np.stack(arrays)


def to_float(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 → ``(B, 3, H, W)`` in ``[-0.5, 0.5]``."""
    return torch.as_tensor(np.require(images, requirements="W")).to(device).permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)


def augment(images: np.ndarray, gen: torch.Generator, device: torch.device, rotate: bool = False,
            jitter: float = 0.1, flips: bool = True) -> torch.Tensor:
    """A training batch ``(B, H, W, 3)`` uint8 → ``(B, 3, H, W)`` in [-0.5, 0.5], augmented: random horizontal and
    vertical flips per image, a rotation by a multiple of 90° per batch (``rotate``; images of a batch share a
    shape, and a quarter turn swaps height and width), and brightness, contrast and saturation factors in
    ``[1 - jitter, 1 + jitter]`` per image. Without ``flips`` the two flips come together (a half turn), so a
    mirror image is never made: for classes that differ only by handedness. Flips and turns move uint8 pixels
    (a quarter of the bytes of float), before the conversion."""
    from .augment import colour_jitter

    x = torch.as_tensor(np.require(images, requirements="W"))
    b = x.shape[0]
    flip_h = torch.rand(b, generator=gen) < 0.5
    flip_v = torch.rand(b, generator=gen) < 0.5 if flips else flip_h
    if flip_h.any():
        x[flip_h] = x[flip_h].flip(2)
    if flip_v.any():
        x[flip_v] = x[flip_v].flip(1)
    if rotate and int(torch.randint(0, 2, (1,), generator=gen)):
        x = torch.rot90(x, 1, dims=(1, 2))
    x = x.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    if jitter > 0:
        x = colour_jitter(x, jitter, gen)
    return x.sub_(0.5)


def lr_factor(epoch: float, cfg: ClassifyConfig) -> float:
    """The learning-rate multiplier at (fractional, 0-based) ``epoch``: linear warm-up over ``warmup_epochs``,
    then constant or a cosine decay to zero at ``epochs``."""
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return (epoch + 1e-3) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        t = (epoch - cfg.warmup_epochs) / max(1e-9, cfg.epochs - cfg.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return 1.0


def gather_patches(x: torch.Tensor, corners: torch.Tensor, patch: int) -> torch.Tensor:
    """Patches ``(B, N, 3, P, P)`` of ``x (B, 3, H, W)`` with top-left ``corners (B, N, 2)``."""
    b, n = corners.shape[:2]
    ar = torch.arange(patch, device=x.device)
    rows = corners[..., 0, None] + ar  # (B, N, P)
    cols = corners[..., 1, None] + ar
    bidx = torch.arange(b, device=x.device)[:, None, None, None]
    out = x.permute(0, 2, 3, 1)[bidx, rows[..., :, None], cols[..., None, :]]  # (B, N, P, P, 3)
    return out.permute(0, 1, 4, 2, 3)


def forward(model, x: torch.Tensor, cfg: ClassifyConfig, gen: torch.Generator | None, seeds: list[int] | None = None):
    """Class logits ``(B, C)``; for attention sampling also the attention ``(B, h, w)`` and draw ``(B, N)``
    (``seeds``: one per image, each image's draw from its own generator; else from ``gen``)."""
    h, w = view_shape(x.shape[2], x.shape[3], cfg.view_scale)
    view = F.interpolate(x, size=(h, w), mode="area")
    if not isinstance(model, AttentionSampling):
        return model(view), None, None
    a = model.attend(view)
    idx = model.sample(a, gen, seeds)
    corners = torch.as_tensor(patch_corners(idx.cpu().numpy(), (h, w), x.shape[2:], model.patch_px), device=x.device)
    return model.classify(gather_patches(x, corners, model.patch_px), model.weights(a, idx)), a, idx


def step_loss(model, logits, y, a, idx, baseline: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One scalar whose gradient is, for each network, the gradient of its own objective; and per-image CE.

    * uniform / CNN: ``CE``;
    * ``reinforce``: ``CE`` (features; the weights carry no gradient) ``+ (CE - L̄) log p(draw)`` (attention)
      ``+ λ Σ a log a``;
    * ``expectation``: ``CE + λ Σ a log a``, differentiated through the estimator's weights by both.
    """
    ce = F.cross_entropy(logits, y, reduction="none")
    loss = ce.mean()
    if a is None or model.attention is None:
        return loss, ce
    loss = loss + model.entropy * neg_entropy(a).mean()
    if model.estimator == "reinforce":
        advantage = ce.detach() - (ce.detach().mean() if baseline is None else baseline)
        loss = loss + (advantage * log_prob_without_replacement(a.reshape(a.shape[0], -1), idx)).mean()
    return loss, ce


def optimisers(model, cfg: ClassifyConfig) -> list[torch.optim.Optimizer]:
    """AdamW for each network (decoupled weight decay ``weight_decay``; 0 is the seed's Adam)."""
    wd = cfg.weight_decay
    if isinstance(model, AttentionSampling) and model.attention is not None:
        rest = [p for n, p in model.named_parameters() if not n.startswith("attention.")]
        return [torch.optim.AdamW(rest, lr=cfg.lr, weight_decay=wd),
                torch.optim.AdamW(model.attention.parameters(), lr=cfg.attention_lr, betas=(cfg.attention_beta1, 0.999),
                                  weight_decay=wd)]
    return [torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=wd)]


def train_step(model, opts: list[torch.optim.Optimizer], x: torch.Tensor, y: torch.Tensor, cfg: ClassifyConfig,
               gen: torch.Generator, baseline: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One gradient step of every network on the batch ``x (B, 3, H, W)``, ``y (B,)``; returns the batch's
    class logits and per-image cross-entropy (detached)."""
    logits, a, idx = forward(model, x, cfg, gen)
    loss, ce = step_loss(model, logits, y, a, idx, baseline)
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in opts:
        opt.step()
    return logits.detach(), ce.detach()


def draw_seed(eval_seed: int, draw: int, key: int) -> int:
    """The seed of draw ``draw`` of image ``key`` (its row in the image sheet): the same draw whatever the batch,
    the split or the script (the attention figures redraw the table's draw 0)."""
    return int(np.random.SeedSequence([eval_seed, draw, key]).generate_state(1)[0])


def concentration(a: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Attention ``(B, h, w)`` → per image the largest cell over the mean cell (1 = uniform) and the entropy over
    ``log K`` (1 = uniform), each ``(B,)``."""
    flat = a.reshape(a.shape[0], -1).double()
    k = flat.shape[1]
    entropy = -(flat * torch.log(flat.clamp_min(1e-30))).sum(1)
    return (flat.amax(1) * k).cpu().numpy(), (entropy / math.log(k) if k > 1 else torch.ones_like(entropy)).cpu().numpy()


class _Timer:
    """Seconds of compute: CPU time of this process on the CPU (it moves far less with machine load than wall
    time; the rules run one thread), wall time with synchronisation on a GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.kind = "wall" if self.cuda else "cpu"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


@torch.no_grad()
def evaluate(model, images: np.ndarray, rows: np.ndarray, labels: np.ndarray, cfg: ClassifyConfig,
             device: torch.device, keys: np.ndarray | None = None, draws: int = 1) -> dict:
    """Predict the images ``rows`` ``draws`` times, draw ``r`` of image ``k`` seeded by
    :func:`draw_seed` ``(eval_seed, r, k)`` (``keys``: the images' sheet rows; default ``rows``).

    Returns ``probs (R, n, C)`` (``R = 1`` for a model that samples nothing), ``accuracy`` and ``ce`` (means
    over draws and images), ``seconds_per_image`` (compute time of one draw, :class:`_Timer`), ``timer``
    and, for attention sampling, ``max_over_mean`` and ``entropy_ratio`` ``(n,)`` of its attention (an
    image's attention is the same in every draw: the draws differ only in the cells sampled from it).
    """
    model.eval()
    keys = rows if keys is None else np.asarray(keys)
    samples = isinstance(model, AttentionSampling)
    draws = max(1, int(draws)) if samples else 1
    timer = _Timer(device)
    per_draw, conc, spent = [], ([], []), 0.0
    for r in range(draws):
        out, t0 = [], timer.now()
        for start in range(0, len(rows), cfg.batch_size):
            batch = rows[start:start + cfg.batch_size]
            seeds = [draw_seed(cfg.eval_seed, r, int(k)) for k in keys[start:start + cfg.batch_size]]
            logits, a, _ = forward(model, to_float(images[batch], device), cfg, None, seeds)
            out.append(torch.softmax(logits.float(), -1).cpu().numpy())
            if r == 0 and a is not None and model.attention is not None:
                for part, values in zip(conc, concentration(a)):
                    part.append(values)
        if r == 0:
            spent = timer.now() - t0
        per_draw.append(np.concatenate(out) if out else np.zeros((0, 0), np.float32))
    probs = np.stack(per_draw)
    y = labels[rows]
    n = len(y)
    result = {"probs": probs, "seconds_per_image": spent / max(1, n), "timer": timer.kind,
              "accuracy": float((probs.argmax(-1) == y).mean()) if n else float("nan"),
              "ce": float(-np.mean(np.log(np.maximum(probs[:, np.arange(n), y], 1e-12)))) if n else float("nan")}
    if conc[0]:
        result["max_over_mean"], result["entropy_ratio"] = np.concatenate(conc[0]), np.concatenate(conc[1])
    return result


def fit(model, images: np.ndarray, labels: np.ndarray, train: np.ndarray, val: np.ndarray, cfg: ClassifyConfig,
        device: torch.device):
    """Train on ``train`` rows, keep the best epoch on ``val``; returns the model and its history."""
    model.to(device)
    opts = optimisers(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    history, best, baseline, started = [], BestEpoch(cfg.patience), None, time.perf_counter()
    y_all = torch.as_tensor(labels)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, losses, correct = time.perf_counter(), [], 0
        perm = train[torch.randperm(len(train), generator=gen).numpy()]
        for start in tqdm(range(0, len(perm), cfg.batch_size), desc=f"epoch {epoch}", leave=False, mininterval=5.0):
            r = perm[start:start + cfg.batch_size]
            if len(r) < 2 and len(perm) > 1:
                continue  # BatchNorm needs two images
            if cfg.augment:
                x = augment(images[r], gen, device, cfg.rotate, cfg.colour_jitter, cfg.flips)
            else:
                x = to_float(images[r], device)
            for opt in opts:
                f = lr_factor(epoch - 1 + start / len(perm), cfg)
                for group in opt.param_groups:
                    group["lr"] = group.setdefault("base_lr", group["lr"]) * f
            y = y_all[r].to(device)
            logits, ce = train_step(model, opts, x, y, cfg, gen, baseline)
            m = float(ce.mean())
            baseline = m if baseline is None else cfg.baseline_momentum * baseline + (1 - cfg.baseline_momentum) * m
            losses.append(m)
            correct += int((logits.argmax(1) == y).sum())
        row = {"epoch": epoch, "train_ce": float(np.mean(losses)), "train_acc_sampled": correct / max(1, len(perm))}
        if len(val):
            ev = evaluate(model, images, val, labels, cfg, device)
            row.update(val_acc=ev["accuracy"], val_ce=ev["ce"])
            key = (ev["accuracy"], -ev["ce"])
        else:
            key = (epoch, 0.0)
        row["seconds"] = time.perf_counter() - t0
        best.update(model, epoch, key)
        history.append(row)
        log.info("epoch %d/%d: %s", epoch, cfg.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
        log_epoch(epoch, cfg.epochs, time.perf_counter() - started,
                  f"val accuracy {row['val_acc']:.3f} (best: epoch {best.epoch})" if len(val) else
                  f"train CE {row['train_ce']:.4f}")
        if len(val) and best.stale:
            progress.info("early stopping: validation accuracy has not improved for %d epochs", cfg.patience)
            break
    hist = pd.DataFrame(history)
    hist["selected"] = hist["epoch"] == best.restore(model)
    progress.info("kept epoch %d of %d (%s)", best.epoch, len(history), duration(time.perf_counter() - started))
    return model, hist


@torch.no_grad()
def redraw(model, image: np.ndarray, key: int, view_scale: float, eval_seed: int, draw: int = 0) -> dict:
    """Draw ``draw`` of :func:`evaluate` on one in-memory image ``(H, W, 3)`` uint8 whose sheet row is ``key``:
    ``probs (C,)``, ``attention (h, w)`` and the sampled patches' ``corners (N, 2)`` — so a figure shows the
    draw the accuracy table counted."""
    model.eval()
    device = next(model.parameters()).device
    cfg = ClassifyConfig(view_scale=view_scale, eval_seed=eval_seed)
    x = to_float(image[None], device)
    logits, a, idx = forward(model, x, cfg, None, [draw_seed(eval_seed, draw, int(key))])
    out = {"probs": torch.softmax(logits[0].float(), -1).cpu().numpy(), "attention": None,
           "corners": np.zeros((0, 2), int)}
    if a is not None:
        view_hw = view_shape(x.shape[2], x.shape[3], view_scale)
        out["attention"] = a[0].cpu().numpy()
        out["corners"] = patch_corners(idx[0].cpu().numpy(), view_hw, x.shape[2:], model.patch_px)
    return out


def pixels_per_image(model, height: int, width: int, view_scale: float) -> int:
    """Pixels a model reads per image: the view, plus ``N · P²`` full-resolution pixels when it samples."""
    h, w = view_shape(height, width, view_scale)
    if isinstance(model, AttentionSampling):
        return h * w + model.n * model.patch_px**2
    return h * w


def run_fold(folds: pd.DataFrame, fold: int, setting: str, cfg: ClassifyConfig, ats: dict, device: torch.device):
    """Train ``setting`` on one fold of the fold table; predictions for every image of the fold.

    Returns the model, its history, a predictions table (``index, image, label, split, draw, pred,
    p_<class>...``, for attention ``attention_max_over_mean, attention_entropy_ratio``, then
    ``seconds_per_image, timer, pixels_per_image``; test images once per draw, ``cfg.draws`` draws when the model
    samples patches, the others once) and the class names (index order).
    """
    from ..models.ats import build_classifier
    from ..utils import seed_everything

    f = folds[folds["fold"] == fold].sort_values("index").reset_index(drop=True)
    if f.empty:
        raise ValueError(f"fold {fold} is not in the fold table")
    classes = sorted(f["label"].unique())
    labels = f["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    images = load_images(f["image"].tolist())
    rows = {s: np.flatnonzero(f["split"].to_numpy() == s) for s in ("train", "val", "test")}
    log.info("%s, fold %d, seed %d: %d classes %s; train/val/test images %d/%d/%d of %s px", setting, fold, cfg.seed,
             len(classes), classes, len(rows["train"]), len(rows["val"]), len(rows["test"]), images.shape[1:3])
    seed_everything(cfg.seed)
    model = build_classifier(setting, len(classes), **ats)
    log.info("%s: %d parameters; estimator %s", setting, sum(p.numel() for p in model.parameters()),
             getattr(model, "estimator", "-") if getattr(model, "attention", None) is not None else "none")
    model, history = fit(model, images, labels, rows["train"], rows["val"], cfg, device)
    out = []
    for split, r in rows.items():
        if not len(r):
            continue
        draws = cfg.draws if split == "test" else 1  # training and validation images: one draw
        ev = evaluate(model, images, r, labels, cfg, device, keys=f.loc[r, "index"].to_numpy(), draws=draws)
        for d, probs in enumerate(ev["probs"]):
            part = f.loc[r, ["index", "image", "label", "split"]].copy()
            part["draw"] = d
            part["pred"] = [classes[i] for i in probs.argmax(1)]
            for i, c in enumerate(classes):
                part[f"p_{c}"] = probs[:, i]
            if "max_over_mean" in ev:
                part["attention_max_over_mean"], part["attention_entropy_ratio"] = ev["max_over_mean"], ev["entropy_ratio"]
            part["seconds_per_image"], part["timer"] = ev["seconds_per_image"], ev["timer"]
            out.append(part)
        log.info("%s accuracy %.3f (%d draw%s)", split, ev["accuracy"], len(ev["probs"]), "s" * (len(ev["probs"]) > 1))
    pred = pd.concat(out, ignore_index=True)
    pred["pixels_per_image"] = pixels_per_image(model, images.shape[1], images.shape[2], cfg.view_scale)
    return model, history, pred, classes


def run_floor(folds: pd.DataFrame, fold: int, seed: int = 0):
    """The ``colour_hist`` floor on one fold (:mod:`histexpr.models.histogram_floor`): its history (one row per
    ``C``) and a predictions table like :func:`run_fold`'s."""
    from ..models.histogram_floor import fit_floor, histogram_features

    f = folds[folds["fold"] == fold].sort_values("index").reset_index(drop=True)
    if f.empty:
        raise ValueError(f"fold {fold} is not in the fold table")
    classes = sorted(f["label"].unique())
    labels = f["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    images = load_images(f["image"].tolist())
    t0 = time.process_time()  # CPU time, as the networks' (evaluate's _Timer)
    features = np.stack([histogram_features(a) for a in images])
    seconds = (time.process_time() - t0) / len(f)
    rows = {s: np.flatnonzero(f["split"].to_numpy() == s) for s in ("train", "val", "test")}
    model, history = fit_floor(features, labels, rows["train"], rows["val"], seed)
    chosen = next(h for h in history if h["selected"])
    progress.info("colour_hist: %d features, C = %g chosen on %d validation images", features.shape[1], chosen["C"],
                  len(rows["val"]))
    out = []
    for split, r in rows.items():
        if not len(r):
            continue
        probs = model.predict_proba(features[r])
        part = f.loc[r, ["index", "image", "label", "split"]].copy()
        part["draw"] = 0
        part["pred"] = [classes[i] for i in probs.argmax(1)]
        for i, c in enumerate(classes):
            part[f"p_{c}"] = probs[:, i]
        part["seconds_per_image"], part["timer"] = seconds, "cpu"
        out.append(part)
        log.info("%s accuracy %.3f", split, float((part["pred"] == part["label"]).mean()))
    pred = pd.concat(out, ignore_index=True)
    pred["pixels_per_image"] = images.shape[1] * images.shape[2]  # it reads the whole image
    return pd.DataFrame(history), pred


def load_classifier(path: str):
    """A trained classifier from its ``model.pt``: ``(model in eval mode, class names, view scale)``."""
    from ..models.ats import build_classifier

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ats = {"reinforce_weights": "attention", **(ckpt.get("ats") or {})}  # models saved before the option: the seed's
    model = build_classifier(ckpt["setting"], len(ckpt["classes"]), **ats)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), list(ckpt["classes"]), float(ckpt["view_scale"])


@torch.no_grad()
def classify_image(model, source, classes: list[str], view_scale: float, generator: torch.Generator | None = None) -> dict:
    """Classify one image read through ``source`` (:class:`~histexpr.data.megapixel.ArrayImage` or
    :class:`~histexpr.data.megapixel.SlideImage`): the view at ``view_scale``, then only the sampled
    patches at full resolution — a whole-slide image is never loaded whole.

    Returns ``label``, ``probs (C,)``, ``attention (h, w)`` (None for the CNN), ``corners (N, 2)``,
    ``pixels_read`` and ``seconds``.
    """
    t0 = time.perf_counter()
    model.eval()
    device = next(model.parameters()).device
    before = source.pixels_read
    view = to_float(source.view(view_scale)[None], device)
    if isinstance(model, AttentionSampling):
        a = model.attend(view)
        idx = model.sample(a, generator)
        corners = patch_corners(idx[0].cpu().numpy(), tuple(view.shape[2:]), (source.height, source.width),
                                model.patch_px)
        patches = to_float(source.patches(corners, model.patch_px), device)[None]  # (1, N, 3, P, P)
        logits = model.classify(patches, model.weights(a, idx))
        attention = a[0].cpu().numpy()
    else:
        logits, attention, corners = model(view), None, np.zeros((0, 2), int)
    probs = torch.softmax(logits[0].float(), -1).cpu().numpy()
    return {"label": classes[int(probs.argmax())], "probs": probs, "attention": attention, "corners": corners,
            "pixels_read": source.pixels_read - before, "seconds": time.perf_counter() - t0}
