"""EGN, the exemplar-guided network C(X_i, e_i, K_i) of Yang et al. (WACV 2023), Sec. 3.2.

Inputs per window ``i``: the image ``X_i``, its global view ``e_i = E(X_i)``
(``D``-dim, from the extractor) and its ``k`` exemplars ``K_i = {[e_j, y_j]}``,
the nearest training windows of other patients with their expression ``y_j``
(``M`` genes). ``C`` is the ViT width, ``L`` the number of patches, ``H × d``
the EB heads × head dimension.

Projector::

    h⁰   = MLP_h(e_i)                       two layers, ReLU            (B, C)
    r⁰_j = MLP_h(W_r [e_j, y_j])            MLP_h shared + one linear   (B, k, C)
    s⁰_j = MLP_s(y_j)                       two layers, ReLU            (B, k, C)

Backbone: a ViT; after every ``frequency``-th transformer block an EB block::

    s^{t+1}_j        = MLP_s^t(s^t_j)
    m_{h,j}, m_{r,j} = Chunk(σ(MLP_m^t([h^t, h^t - r^t_j])))
    ĥ^{t+1}          = h^t + Avg_j(m_{h,j} ⊙ s^{t+1}_j)
    r^{t+1}_j        = r^t_j + m_{r,j} ⊙ s^{t+1}_j
    O_h, O_z         = Chunk(MLP_o^t(Z^t) · σ(MLP_k^t(ĥ^{t+1})))   one scale per patch and head
    Z^{t+1}          = Z^t + MLP_z^t(O_z)
    h^{t+1}          = ĥ^{t+1} + MLP_n^t(Avg_l(O_h))

Prediction: ``ŷ_i = MLP_g([h^T, AttPool(Z^T)])`` with class-specific residual
attention pooling (CSRA: ``mean_l(A z_l) + λ Σ_l softmax_l(T·A z_l) ⊙ A z_l``).

Ablations of Table 4 are variants of the same module: ``backbone_only`` (ViT +
AttPool), ``no_eb_block`` (ViT + AttPool concatenated with ``e_i``),
``no_projector`` (single linear layers instead of the projector's MLPs) and
``pretrained_e_linear`` (a linear layer on the frozen extractor's ``e_i``).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from . import register_model

log = logging.getLogger(__name__)

# A small preset for CPU; the authors' released configuration is
# patch_size 32 on 256-px windows, embed_dim 1024, depth 8, num_heads 16, mlp_ratio 4.
DEFAULTS = dict(patch_size=16, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0, drop_path=0.1,
                eb_heads=8, eb_head_dim=64, frequency=2, n_exemplars=9, csra_temperature=0.1, csra_lambda=0.5)
VARIANTS = ("full", "backbone_only", "no_eb_block", "no_projector", "pretrained_e_linear")


def mlp2(din: int, dout: int) -> nn.Sequential:
    """Two-layer perceptron with ReLU (the projector's MLP_h, MLP_s)."""
    return nn.Sequential(nn.Linear(din, dout), nn.ReLU(), nn.Linear(dout, dout))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over exemplars ``j`` of ``x (B, k, C)`` where ``mask (B, k)``; zero when none is valid."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp(min=1)


class Projector(nn.Module):
    """``e_i (B, D), e_j (B, k, D), y_j (B, k, M)`` → ``h⁰ (B, C), r⁰ (B, k, C), s⁰ (B, k, C)``."""

    def __init__(self, d_code: int, n_genes: int, dim: int, linear: bool = False):
        super().__init__()
        self.linear = linear
        if linear:  # the 'w/o projector' ablation: one linear layer each, to unify the dimension
            self.h, self.r, self.s = nn.Linear(d_code, dim), nn.Linear(d_code + n_genes, dim), nn.Linear(n_genes, dim)
        else:
            self.h = mlp2(d_code, dim)  # MLP_h
            self.r_in = nn.Linear(d_code + n_genes, d_code)  # MLP_r = MLP_h after this extra layer
            self.s = mlp2(n_genes, dim)  # MLP_s

    def forward(self, e_i, e_j, y_j):
        ey = torch.cat([e_j, y_j], -1)
        r = self.r(ey) if self.linear else self.h(self.r_in(ey))
        return self.h(e_i), r, self.s(y_j)


class EBBlock(nn.Module):
    """Exemplar Bridging block: exemplars → refined global view h → per-patch, per-head scaling of Z."""

    def __init__(self, dim: int, n_patches: int, heads: int, head_dim: int):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim, self.n_patches = heads, head_dim, n_patches
        self.mlp_s = nn.Linear(dim, dim)  # MLP_s^t
        self.mlp_m = nn.Sequential(nn.Linear(2 * dim, inner), nn.SiLU(), nn.Linear(inner, 2 * dim))  # MLP_m^t
        self.norm_z = nn.LayerNorm(dim)
        self.mlp_o = nn.Linear(dim, 2 * inner)  # MLP_o^t: per patch, both chunks, all heads
        self.mlp_k = nn.Linear(dim, n_patches * heads)  # ĥ → one scale per patch and head
        self.mlp_z = nn.Linear(inner, dim)  # MLP_z^t
        self.mlp_n = nn.Linear(inner, dim)  # MLP_h^t of the h update

    def forward(self, z, h, r, s, mask):
        """z ``(B, L, C)``, h ``(B, C)``, r, s ``(B, k, C)``, mask ``(B, k)`` → updated z, h, r, s."""
        b, n, _ = z.shape
        s = self.mlp_s(s)
        hk = h.unsqueeze(1).expand_as(r)
        m_h, m_r = torch.sigmoid(self.mlp_m(torch.cat([hk, hk - r], -1))).chunk(2, -1)
        h_hat = h + masked_mean(m_h * s, mask)
        r = r + m_r * s
        scale = torch.sigmoid(self.mlp_k(h_hat)).view(b, n, self.heads, 1)
        o = self.mlp_o(self.norm_z(z)).view(b, n, self.heads, 2 * self.head_dim) * scale
        o_h, o_z = o.chunk(2, -1)  # (B, L, H, d) each
        z = z + self.mlp_z(o_z.reshape(b, n, -1))
        h = h_hat + self.mlp_n(o_h.mean(1).reshape(b, -1))
        return z, h, r, s


class AttentionPool(nn.Module):
    """CSRA-style pooling ``(B, L, C) → (B, C)``: average plus λ × temperature-softmax attention over patches."""

    def __init__(self, dim: int, temperature: float = 0.1, lam: float = 0.5):
        super().__init__()
        self.score, self.temperature, self.lam = nn.Linear(dim, dim), temperature, lam

    def forward(self, z):
        a = self.score(z)
        return a.mean(1) + self.lam * (torch.softmax(self.temperature * a, dim=1) * a).sum(1)


class EGN(nn.Module):
    """C(X_i, e_i, K_i) → ``(B, M)``; ``variant`` selects an ablation (see module docstring)."""

    def __init__(self, n_genes: int, img_size: int, d_code: int, variant: str = "full", **p):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EGN variant {variant!r}; choose from {VARIANTS}")
        p = {**DEFAULTS, **p}
        self.variant, self.n_exemplars = variant, int(p["n_exemplars"])
        if variant == "pretrained_e_linear":  # linear probing of the frozen extractor's global view
            self.head = nn.Linear(d_code, n_genes)
            return
        from timm.models.vision_transformer import VisionTransformer

        dim = p["embed_dim"]
        self.vit = VisionTransformer(img_size=img_size, patch_size=p["patch_size"], num_classes=0,
                                     embed_dim=dim, depth=p["depth"], num_heads=p["num_heads"],
                                     mlp_ratio=p["mlp_ratio"], drop_path_rate=p["drop_path"], class_token=False,
                                     global_pool="")
        n_patches = self.vit.patch_embed.num_patches
        self.pool = AttentionPool(dim, p["csra_temperature"], p["csra_lambda"])
        uses_eb = variant in ("full", "no_projector")
        if uses_eb:
            self.projector = Projector(d_code, n_genes, dim, linear=variant == "no_projector")
            self.eb = nn.ModuleDict({str(i): EBBlock(dim, n_patches, p["eb_heads"], p["eb_head_dim"])
                                     for i in range(p["depth"]) if (i + 1) % p["frequency"] == 0})
            if not len(self.eb):
                raise ValueError(f"EGN: frequency {p['frequency']} > depth {p['depth']} leaves no EB block")
        width = dim + {"backbone_only": 0, "no_eb_block": d_code}.get(variant, dim)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_genes))  # MLP_g

    def features(self, batch: dict) -> torch.Tensor:
        """The representation MLP_g reads, ``(B, width)``: ``[h^T, AttPool(Z^T)]`` for the full model."""
        if self.variant == "pretrained_e_linear":
            return batch["embedding"]
        vit = self.vit
        z = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(batch["image"]))))
        h = None
        if hasattr(self, "eb"):
            k = self.n_exemplars
            e_j, y_j = batch["exemplar_embedding"][:, :k], batch["exemplar_target"][:, :k]
            mask = batch["exemplar_mask"][:, :k]
            h, r, s = self.projector(batch["embedding"], e_j, y_j)
        for i, block in enumerate(vit.blocks):
            z = block(z)
            if h is not None and str(i) in self.eb:
                z, h, r, s = self.eb[str(i)](z, h, r, s, mask)
        pooled = self.pool(vit.norm(z))
        if self.variant == "backbone_only":
            return pooled
        return torch.cat([batch["embedding"] if self.variant == "no_eb_block" else h, pooled], -1)

    def forward(self, batch: dict) -> torch.Tensor:
        """``batch``: ``image (B, 3, S, S)``, ``embedding (B, D)``, ``exemplar_embedding (B, K, D)``,
        ``exemplar_target (B, K, M)``, ``exemplar_mask (B, K)`` (only what the variant uses)."""
        return self.head(self.features(batch))


def _builder(variant: str):
    def build(n_genes: int, params: dict, img_size: int, d_code: int | None = None) -> nn.Module:
        p = {**DEFAULTS, **(params or {})}
        if d_code is None and variant != "backbone_only":
            raise ValueError(f"EGN ({variant}) reads the global view and needs the extractor's code dimension (d_code)")
        model = EGN(n_genes, img_size, d_code or 0, variant, **{k: v for k, v in p.items() if k in DEFAULTS})
        log.info("egn (%s): ViT %d x %d, patch %d; EB %d heads x %d every %d blocks; %d exemplars", variant,
                 p["depth"], p["embed_dim"], p["patch_size"], p["eb_heads"], p["eb_head_dim"], p["frequency"],
                 p["n_exemplars"])
        return model
    return build


_NEEDS = {"full": ("windows", "embeddings", "exemplars"), "backbone_only": ("windows",),
          "no_eb_block": ("windows", "embeddings"), "no_projector": ("windows", "embeddings", "exemplars"),
          "pretrained_e_linear": ("embeddings",)}
for _variant in VARIANTS:
    register_model("egn" if _variant == "full" else f"egn_{_variant}", kind="neural", needs=_NEEDS[_variant],
                   description=f"EGN ({_variant.replace('_', ' ')})")(_builder(_variant))
