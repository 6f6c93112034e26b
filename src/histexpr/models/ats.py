"""Attention sampling for megapixel classification (Katharopoulos & Fleuret 2019; the lymphoma seed).

An attention network looks at a downscaled *view* of the image and puts a
distribution ``a(x)`` over its cells; ``N`` cells are sampled from it without
replacement; a ``P × P`` patch is cut around each at full resolution; a small
feature network maps each patch to unit-norm logits; the class distribution
is their attention-weighted average, then a softmax::

    a(x)      = softmax_{h,w}( conv3×3→1( [conv3×3→8, tanh, BN] × 3 (view) ) )          (B, h, w), Σ = 1
    s_1..s_N  = top-N of log a + Gumbel noise          (Gumbel top-k: N draws without replacement)
    f(p)      = normalise( W · maxpool( [conv3×3→16, BN, ReLU] × 4 (p) ) )               ‖f‖ = 1
    o         = softmax( s · Σ_i w_i f(p_{s_i}) )                                       s learned

Two ways to learn the attention (``estimator``):

* ``reinforce`` (the seed): the attention net follows the policy gradient of
  the sample's loss with a running-mean baseline, ``(L - L̄) ∇ log p(s_1..s_N)``,
  where ``p`` is the probability of the ordered draw without replacement,
  ``Π_i a_{s_i} / (1 - Σ_{j<i} a_{s_j})``; the weights carry no gradient:
  the expectation estimator's ``w`` below (``reinforce_weights="unbiased"``) or
  the seed's ``w_i = a_{s_i} / Σ_j a_{s_j}`` (``"attention"``);
* ``expectation`` (Katharopoulos & Fleuret): the unbiased estimator of
  ``E_{i~a}[f_i] = Σ_i a_i f_i`` for sampling without replacement,
  ``(1/N) Σ_k [Σ_{j<k} a_{s_j} f_{s_j} + (1 - Σ_{j<k} a_{s_j}) f_{s_k}]``, i.e.
  ``w_m = ((1 - c_{m-1}) + (N - m) a_{s_m}) / N`` with ``c`` the running sum of
  the sampled attention; the loss is differentiated through ``w``.

Both add ``λ Σ_x a(x) log a(x)`` (the seed's ``H``, minus the entropy) to the
attention's loss, so a positive ``λ`` pushes ``a`` towards uniform
(exploration). ``uniform`` sampling (``w_i = 1/N``, no attention network) and a
small CNN on the whole view are the baselines.

Where we depart from the seed, and why (each measured on the lymphoma images, README "Attention sampling"):

* a normalisation after every convolution of the feature network and of the view CNN (BatchNorm; the
  statistics of a batch's ``B · N`` patches), and He initialisation. The seed's
  plain ``[conv, ReLU] × 4`` with PyTorch's default init shrinks the signal layer by layer: at initialisation
  its logits are mostly the bias, the same for every patch, and training sat at chance;
* a learned scale ``s`` (kept as ``log s``, 5 at the start) on the unit-norm logits: with ``s = 1`` (the seed)
  no class can pass a probability of 0.63 of three, so the cross-entropy cannot fall below 0.46.
* reinforce weighs the sampled logits by the unbiased estimator's ``w``, not the seed's ``a_s / Σ a_s``: the
  patches are already drawn from ``a``, so weighing them by ``a`` again counts the attention twice, and as
  the attention sharpens one or two patches carry the whole sum (5 folds: 91.7% against the seed's 86.7%).
* no entropy term (``λ = 0``), and the attention's own Adam at lr 0.02 with β1 = 0.9: with the seed's
  ``λ = 0.01``, lr 0.001 and β1 = 0.999 the learned attention stayed within 1.4× of uniform.
* the attention network pads its convolutions by repeating the edge (the seed: zeros), so the image border
  is not a dark frame: with zero padding the maps had bright specks along the borders.
The attention network is otherwise the seed's (it already has BatchNorm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ESTIMATORS = ("reinforce", "expectation")
REINFORCE_WEIGHTS = ("attention", "unbiased")
NORMS = ("batch", "group", "none")
FLOOR = "colour_hist"  # the histogram floor of models/histogram_floor.py, listed with the settings


class AttentionNet(nn.Module):
    """View ``(B, 3, h, w)`` → attention ``(B, h, w)`` summing to one over both spatial axes.

    The convolutions pad by repeating the edge pixels (the seed pads with zeros): a zero border is a dark frame
    the network can respond to, and the attention maps had bright specks along the image borders."""

    def __init__(self, width: int = 8):
        super().__init__()
        layers, cin = [], 3
        for _ in range(3):
            layers += [nn.Conv2d(cin, width, 3, padding=1, padding_mode="replicate"), nn.Tanh(), nn.BatchNorm2d(width)]
            cin = width
        self.body = nn.Sequential(*layers, nn.Conv2d(width, 1, 3, padding=1, padding_mode="replicate"))

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        logits = self.body(view)[:, 0]
        b, h, w = logits.shape
        return torch.softmax(logits.reshape(b, -1), -1).reshape(b, h, w)


def conv_norm_relu(cin: int, cout: int, norm: str) -> list[nn.Module]:
    """``conv3×3 → norm → ReLU``; ``norm`` is ``batch`` (BatchNorm), ``group`` (GroupNorm, 4 groups: the same in
    training and evaluation, whatever the batch) or ``none`` (the seed's networks)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none")]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(cout))
    elif norm == "group":
        layers.append(nn.GroupNorm(min(4, cout), cout))
    elif norm != "none":
        raise ValueError(f"unknown norm {norm!r}; choose from {NORMS}")
    return layers + [nn.ReLU()]


def init_weights(module: nn.Module) -> None:
    """He initialisation of every convolution (fan-out, ReLU gain), zero biases: with a normalisation after
    each convolution, the signal keeps its scale through the layers from the first step."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class FeatureNet(nn.Module):
    """Patches ``(M, 3, P, P)`` → unit-norm logits ``(M, C)``.

    The seed's ``[conv3×3→16, ReLU] × 4``, global max pool, linear, normalise — with a normalisation after each
    convolution (``norm``; the seed has none). Without it the default init shrinks the image signal layer
    by layer, and at initialisation the logits are mostly the bias: the same for every patch.
    """

    def __init__(self, n_classes: int, width: int = 16, norm: str = "batch"):
        super().__init__()
        layers, cin = [], 3
        for _ in range(4):
            layers += conv_norm_relu(cin, width, norm)
            cin = width
        self.body, self.fc = nn.Sequential(*layers), nn.Linear(width, n_classes)
        init_weights(self)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc(self.body(patches).amax((2, 3))), dim=-1)


def gumbel_topk(probs: torch.Tensor, n: int, generator: torch.Generator | None = None,
                seeds: list[int] | None = None) -> torch.Tensor:
    """``n`` distinct cells of each row of ``probs (B, K)``, in the order a sequential draw without
    replacement would produce them: the top-``n`` of ``log p + Gumbel(0, 1)``. Returns ``(B, n)`` indices.

    ``seeds`` (one per row) draws each row's noise from its own generator, so an image's draw does not depend
    on the batch it sits in (evaluation: draw ``r`` of an image is reproducible on its own)."""
    if seeds is not None:
        if len(seeds) != probs.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {probs.shape[0]} rows")
        u = torch.stack([torch.rand(probs.shape[1], generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    else:
        u = torch.rand(probs.shape, generator=generator, device="cpu")
    u = u.to(probs.device).clamp_(1e-12, 1 - 1e-12)
    keys = torch.log(probs.clamp_min(1e-30)) - torch.log(-torch.log(u))
    return keys.topk(n, dim=-1).indices


def log_prob_without_replacement(probs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``log Π_i p_{s_i} / (1 - Σ_{j<i} p_{s_j})`` of the ordered draw ``idx (B, N)`` from ``probs (B, K)``."""
    p = probs.gather(1, idx)
    before = torch.cumsum(p, 1) - p
    return (torch.log(p.clamp_min(1e-30)) - torch.log((1 - before).clamp_min(1e-12))).sum(1)


def expectation_weights(p_sampled: torch.Tensor) -> torch.Tensor:
    """Weights ``w (B, N)`` of the unbiased without-replacement estimator ``Σ_m w_m f_{s_m}`` of ``Σ_i a_i f_i``,
    from the sampled attention ``p_sampled (B, N)`` in draw order."""
    n = p_sampled.shape[1]
    before = torch.cumsum(p_sampled, 1) - p_sampled  # c_{m-1}
    later = torch.arange(n - 1, -1, -1, device=p_sampled.device, dtype=p_sampled.dtype)  # N - m
    return ((1 - before) + later * p_sampled) / n


def neg_entropy(a: torch.Tensor) -> torch.Tensor:
    """The seed's ``H(a) = Σ_x a(x) log a(x)`` per image, ``(B, h, w)`` → ``(B,)``."""
    flat = a.reshape(a.shape[0], -1)
    return (flat * torch.log(flat.clamp_min(1e-30))).sum(1)


class AttentionSampling(nn.Module):
    """The attention-sampling classifier (``sampler="attention"``) or its uniform-sampling baseline."""

    def __init__(self, n_classes: int, n_patches: int, patch_px: int, sampler: str = "attention",
                 estimator: str = "reinforce", entropy: float = 0.0, logit_scale: float = 5.0,
                 learn_scale: bool = True, width: int = 16, norm: str = "batch", reinforce_weights: str = "unbiased"):
        super().__init__()
        if reinforce_weights not in REINFORCE_WEIGHTS:
            raise ValueError(f"unknown reinforce_weights {reinforce_weights!r}; choose from {REINFORCE_WEIGHTS}")
        self.reinforce_weights = reinforce_weights
        if sampler not in ("attention", "uniform"):
            raise ValueError(f"unknown sampler {sampler!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose from {ESTIMATORS}")
        self.n, self.patch_px, self.sampler, self.estimator, self.entropy = n_patches, patch_px, sampler, estimator, entropy
        self.attention = AttentionNet() if sampler == "attention" else None
        self.features = FeatureNet(n_classes, width, norm)
        # o = softmax(s · Σ w_i f_i): with ‖f‖ = 1 and s = 1 (the seed) no class can pass p = 0.63 of three;
        # a learned s (kept as log s) keeps the unit-norm logits and lets the classifier be confident.
        log_s = torch.tensor(float(logit_scale)).log()
        self.log_scale = nn.Parameter(log_s) if learn_scale else nn.Buffer(log_s)

    def attend(self, view: torch.Tensor) -> torch.Tensor:
        """``(B, 3, h, w)`` → ``(B, h, w)``; uniform for the baseline."""
        if self.attention is None:
            b, _, h, w = view.shape
            return view.new_full((b, h, w), 1.0 / (h * w))
        return self.attention(view)

    def sample(self, a: torch.Tensor, generator: torch.Generator | None = None,
               seeds: list[int] | None = None) -> torch.Tensor:
        """``N`` distinct cells of the flattened view grid, ``(B, N)``, in draw order (``seeds``: one per image,
        see :func:`gumbel_topk`)."""
        flat = a.reshape(a.shape[0], -1)
        if self.n > flat.shape[1]:
            raise ValueError(f"{self.n} patches asked from a view of only {flat.shape[1]} cells")
        return gumbel_topk(flat.detach(), self.n, generator, seeds)

    def weights(self, a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Aggregation weights ``(B, N)`` of the sampled patches' logits."""
        if self.attention is None:
            return a.new_full(idx.shape, 1.0 / idx.shape[1])
        p = a.reshape(a.shape[0], -1).gather(1, idx)
        if self.estimator == "expectation":
            return expectation_weights(p)
        if self.reinforce_weights == "unbiased":
            return expectation_weights(p).detach()
        return (p / p.sum(1, keepdim=True)).detach()

    def classify(self, patches: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Patches ``(B, N, 3, P, P)`` and weights ``(B, N)`` → class logits ``s Σ_i w_i f_i``, ``(B, C)``
        (a softmax turns them into ``o``)."""
        b, n = patches.shape[:2]
        f = self.features(patches.flatten(0, 1)).view(b, n, -1)
        return self.log_scale.exp() * (w.unsqueeze(-1) * f).sum(1)


class ViewCNN(nn.Module):
    """The full-image baseline: ``[conv3×3→16, norm, ReLU, maxpool 2] × 4``, global max pool, linear, on the view."""

    def __init__(self, n_classes: int, width: int = 16, norm: str = "batch"):
        super().__init__()
        layers, cin = [], 3
        for _ in range(4):
            layers += conv_norm_relu(cin, width, norm) + [nn.MaxPool2d(2, ceil_mode=True)]
            cin = width
        self.body, self.fc = nn.Sequential(*layers), nn.Linear(width, n_classes)
        init_weights(self)

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(view).amax((2, 3)))


def parse_setting(name: str) -> dict:
    """``ats-p15-n5-expectation`` / ``ats-p15-n5-reinforce`` / ``uniform-p32-n20`` / ``cnn`` / ``colour_hist``
    (the floor) → its kind, patch size, number of patches and, for attention, the estimator (``None`` for the
    older ``ats-p<P>-n<N>``: ``ats.estimator`` then decides)."""
    if name == "cnn":
        return {"kind": "cnn"}
    if name == FLOOR:
        return {"kind": "floor"}
    parts = name.split("-")
    kind, p, n = (parts + ["", "", ""])[:3]
    estimator = parts[3] if len(parts) == 4 else None
    if (kind not in ("ats", "uniform") or len(parts) not in (3, 4) or not p[1:].isdigit() or not n[1:].isdigit()
            or p[:1] != "p" or n[:1] != "n" or (estimator is not None and (kind != "ats" or estimator not in ESTIMATORS))):
        raise ValueError(f"unknown setting {name!r}: expected ats-p<px>-n<N>-<{'|'.join(ESTIMATORS)}>, "
                         "uniform-p<px>-n<N> or cnn")
    out = {"kind": kind, "patch_px": int(p[1:]), "n_patches": int(n[1:])}
    if kind == "ats":
        out["estimator"] = estimator
    return out


def uniform_partner(name: str) -> str | None:
    """The uniform-sampling setting at the same ``P`` and ``N`` as an attention setting (else ``None``)."""
    s = parse_setting(name)
    return f"uniform-p{s['patch_px']}-n{s['n_patches']}" if s["kind"] == "ats" else None


def build_classifier(setting: str, n_classes: int, estimator: str = "reinforce", entropy: float = 0.0,
                     logit_scale: float = 5.0, learn_scale: bool = True, width: int = 16, norm: str = "batch",
                     view_norm: str = "batch", reinforce_weights: str = "unbiased") -> nn.Module:
    """The model of a setting name (``ats:`` in the config sets the keywords; an estimator in the name overrides
    ``estimator``). The seed's networks are ``logit_scale=1, learn_scale=False, norm="none", view_norm="none",
    reinforce_weights="attention"``."""
    s = parse_setting(setting)
    estimator = s.get("estimator") or estimator
    if s["kind"] == "floor":
        raise ValueError(f"{setting} is the histogram floor, not a network (see models/histogram_floor.py)")
    if s["kind"] == "cnn":
        return ViewCNN(n_classes, width, view_norm)
    return AttentionSampling(n_classes, s["n_patches"], s["patch_px"], "attention" if s["kind"] == "ats" else "uniform",
                             estimator, entropy, logit_scale, learn_scale, width, norm, reinforce_weights)
