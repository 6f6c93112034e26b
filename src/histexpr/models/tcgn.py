"""TCGN: Transformer with Convolution and Graph-Node co-embedding (Xiao et al.).

A CMT backbone (stem, four stages of CMT blocks with patch embeddings between)
whose stage-3 features are fused, by channel attention, with the outputs of
two GNN blocks fed from stages 1 and 2. Shapes for a ``S × S`` window
(``S`` a multiple of 32); ``N = (S/16)²`` graph nodes (196 at 224 px)::

    stem      3×[3×3 conv (first stride 2), GELU, BN]          (B, 16, S/2, S/2)
    stage a   patch-embed 2×2 + 2 CMT blocks                   (B, 46, S/4, S/4)  ──► GNN block 0 ─┐
    stage b   patch-embed + 2 CMT blocks                       (B, 92, S/8, S/8)  ──► GNN block 1 ─┼┐
    stage c   patch-embed, channel attention with GNN 0,       (B, N, 184)                         ◄┘│
              10 CMT blocks, channel attention with GNN 1                                            ◄┘
    stage d   patch-embed + 2 CMT blocks                       (B, (S/32)², 368)
    head      1×1 conv → 1280, BN, swish, avg pool, Linear-GELU-Linear → (B, M)

CMT block (tokens ``X``, grid ``H × W``)::

    X ← X + DWConv3×3(X)                                      local perception unit
    X ← X + LMHSA(LN(X)),  LMHSA = softmax(Q Kᵀ/√d + B) V,    K, V from a k×k stride-k depth-wise conv of X
    X ← X + IRFFN(LN(X)),  IRFFN = 1×1 conv, DW 3×3 residual, 1×1 conv (GELU, BN)

GNN block (stage features ``F``, nodes on the ``N`` grid), as the paper's figure:

1. connection analyser: keys ``K`` from a ConvNeXt branch, queries ``Q`` from
   patch-embedding + a CMT block; cross attention
   ``A_h = softmax(Q_h K_hᵀ/√D + I)`` per head, node features ``X = W_v K``;
2. edges: the ``topk · N`` largest entries of ``Ā = mean_h A_h`` (over the whole
   matrix, as the authors' code), each with features
   ``[A_1..A_H, Ā, 1/(1 + d_ij/3), 1/√((‖x_i − x_j‖² + s)/s), (1 + cos(x_i, x_j))/2]``;
3. incidence ``T`` (N × E; ``T_ne = 1`` when node ``n`` ends edge ``e``), node
   adjacency ``Â_v = D^-½ A D^-½``, edge adjacency ``Â_e`` (edges sharing a
   node, self-loops, symmetric normalisation);
4. CensNet (node, edge, node layers)::

       node:  X' = (T diag(Z p) Tᵀ ⊙ Â_v) X W + b        (diagonal of the first factor set to 1)
       edge:  Z' = norm_col(Tᵀ diag(X p) T ⊙ Â_e) Z W + b

5. fusion: nodes through a CMT block, edges gathered to nodes (``T Z / topk``)
   through a Transformer block, concatenated, channel attention, a linear layer.

Everything is dense and batched (``topk`` + ``gather`` + ``bmm``), so a
batch is one graph computation and bf16 autocast works; the authors' code
builds each sample's graph on the CPU with sparse tensors.

Channel attention: a Transformer block whose tokens are the *channels* of
``[X, G]`` (each a vector over the N nodes), attention logits plus ``I``; the
first ``C`` channels are kept.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from . import register_model
from .weights import init_weights, load_pretrained

log = logging.getLogger(__name__)

DEFAULTS = dict(embed_dims=[46, 92, 184, 368], depths=[2, 2, 10, 2], num_heads=[1, 2, 4, 8], mlp_ratio=3.6,
                sr_ratios=[8, 4, 2, 1], stem_channels=16, fc_dim=1280, gnn_heads=2, gnn_out=48, topk=4,
                dropout=0.1, drop_path=0.0, pretrained_checkpoint=None)


def tokens_to_grid(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``(B, H·W, C)`` → ``(B, C, H, W)``."""
    return x.transpose(1, 2).reshape(x.shape[0], -1, *hw)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, H·W, C)``."""
    return x.flatten(2).transpose(1, 2)


class PatchEmbed(nn.Module):
    """2×2 (or p×p) stride-p conv + LayerNorm: ``(B, C, H, W)`` → ``(B, HW/p², D)``, new grid."""

    def __init__(self, cin: int, dim: int, patch: int = 2):
        super().__init__()
        self.proj, self.norm = nn.Conv2d(cin, dim, patch, patch), nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        return self.norm(grid_to_tokens(x)), tuple(x.shape[-2:])


class LMHSA(nn.Module):
    """Lightweight MHSA: keys/values from a k×k stride-k depth-wise conv; learned position bias ``B``."""

    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Sequential(nn.Conv2d(dim, dim, sr, sr, groups=dim), nn.BatchNorm2d(dim)) if sr > 1 else None

    def forward(self, x, hw, bias):
        """x ``(B, N, C)``, bias ``(heads, N, N/k²)`` → ``(B, N, C)``."""
        b, n, c = x.shape
        kv = grid_to_tokens(self.sr(tokens_to_grid(x, hw))) if self.sr is not None else x
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k = self.k(kv).view(b, kv.shape[1], self.heads, -1).transpose(1, 2)
        v = self.v(kv).view(b, kv.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class IRFFN(nn.Module):
    """Inverted residual FFN: 1×1 conv (GELU, BN), depth-wise 3×3 with residual (GELU, BN), 1×1 conv (BN)."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hid = int(dim * ratio)
        self.expand = nn.Sequential(nn.Conv2d(dim, hid, 1), nn.GELU(), nn.BatchNorm2d(hid))
        self.dw = nn.Conv2d(hid, hid, 3, 1, 1, groups=hid)
        self.dw_post = nn.Sequential(nn.GELU(), nn.BatchNorm2d(hid))
        self.reduce = nn.Sequential(nn.Conv2d(hid, dim, 1), nn.BatchNorm2d(dim))

    def forward(self, x, hw):
        h = self.expand(tokens_to_grid(x, hw))
        return grid_to_tokens(self.reduce(self.dw_post(self.dw(h) + h)))


class CMTBlock(nn.Module):
    """LPU → LN → LMHSA (+) → LN → IRFFN (+), on tokens ``(B, N, C)`` of an ``H × W`` grid."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, sr: int, drop_path: float = 0.0):
        super().__init__()
        self.lpu = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.norm1, self.attn = nn.LayerNorm(dim), LMHSA(dim, heads, sr)
        self.norm2, self.ffn = nn.LayerNorm(dim), IRFFN(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()


    def forward(self, x, hw, bias):
        g = tokens_to_grid(x, hw)
        x = grid_to_tokens(self.lpu(g) + g)
        x = x + self.drop_path(self.attn(self.norm1(x), hw, bias))
        return x + self.drop_path(self.ffn(self.norm2(x), hw))


class Stage(nn.Module):
    """``depth`` CMT blocks sharing one relative position bias ``(heads, N, N/sr²)``."""

    def __init__(self, dim, depth, heads, mlp_ratio, sr, side, drop_paths):
        super().__init__()
        n = side * side
        self.bias = nn.Parameter(torch.randn(heads, n, n // (sr * sr)))
        self.blocks = nn.ModuleList([CMTBlock(dim, heads, mlp_ratio, sr, dp) for dp in drop_paths])

    def forward(self, x, hw):
        for blk in self.blocks:
            x = blk(x, hw, self.bias)
        return x


class TransformerBlock(nn.Module):
    """Pre-norm MHSA + FFN (ratio 4); ``add_identity`` adds ``I`` to the attention logits.
    As the authors', the heads are concatenated without an output projection."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1, add_identity: bool = False):
        super().__init__()
        self.heads, self.add_identity = heads, add_identity
        self.norm1, self.qkv = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        mask = torch.eye(n, device=x.device, dtype=q.dtype) if self.add_identity else None
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, n, c)
        x = x + self.drop(a)
        return x + self.drop(self.ffn(self.norm2(x)))


def _heads_for(dim: int, wanted: int) -> int:
    return max(h for h in range(1, wanted + 1) if dim % h == 0)


class ChannelAttention(nn.Module):
    """Self-attention among the channels of ``[X, G]`` (tokens = channels, each a vector over N nodes);
    returns the first ``C`` channels: ``(B, N, C), (B, N, C_g)`` → ``(B, N, C)``."""

    def __init__(self, n_nodes: int, dropout: float = 0.1):
        super().__init__()
        self.block = TransformerBlock(n_nodes, _heads_for(n_nodes, 4), dropout, add_identity=True)

    def forward(self, x, g):
        c = x.shape[-1]
        return self.block(torch.cat([x, g], -1).transpose(1, 2)).transpose(1, 2)[..., :c]


class ConvNeXtBlock(nn.Module):
    """DW 7×7, LN (GroupNorm 1), 1×1 ×4, GELU, 1×1, layer scale 1e-6, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(dim, dim, 7, 1, 3, groups=dim), nn.GroupNorm(1, dim),
                                 nn.Conv2d(dim, 4 * dim, 1), nn.GELU(), nn.Conv2d(4 * dim, dim, 1))
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), 1e-6))

    def forward(self, x):
        return x + self.gamma * self.net(x)


def convnext_stage(cin: int, cout: int, depth: int) -> nn.Sequential:
    """Downsample ×2 (GroupNorm + 2×2 stride-2 conv) then ``depth`` ConvNeXt blocks."""
    return nn.Sequential(nn.GroupNorm(1, cin), nn.Conv2d(cin, cout, 2, 2), *[ConvNeXtBlock(cout) for _ in range(depth)])


def grid_distance(side: int, device) -> torch.Tensor:
    """Spatial closeness ``1 / (1 + d_ij / 3)`` of the nodes of a ``side × side`` grid, ``(N, N)``."""
    yx = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
    return 1.0 / (1.0 + torch.cdist(yx.float(), yx.float()).to(device) / 3.0)


def build_graph(x: torch.Tensor, attn: torch.Tensor, topk: int, closeness: torch.Tensor):
    """Edges and features from node features and cross attention, all samples at once.

    Args:
        x: ``(B, N, D)`` node features; attn: ``(B, H, N, N)``; closeness: ``(N, N)``.
    Returns:
        ``T (B, N, E)`` incidence, ``A_v (B, N, N)`` normalised node adjacency,
        ``A_e (B, E, E)`` normalised edge adjacency, ``Z (B, E, H + 4)`` edge features,
        with ``E = topk · N``.
    """
    b, n, d = x.shape
    mean = attn.mean(1)  # Ā (B, N, N)
    flat = mean.reshape(b, -1).topk(min(topk * n, n * n), dim=-1).indices  # (B, E)
    src, dst = flat // n, flat % n
    per_head = attn.reshape(b, attn.shape[1], -1).gather(2, flat[:, None].expand(-1, attn.shape[1], -1))
    xs, xd = x.gather(1, src[..., None].expand(-1, -1, d)), x.gather(1, dst[..., None].expand(-1, -1, d))
    s = max(d // 2, 1)
    l2 = 1.0 / torch.sqrt((((xs - xd) ** 2).sum(-1) + s) / s)
    cos = (1 + F.cosine_similarity(xs, xd, dim=-1, eps=1e-6)) / 2
    z = torch.cat([per_head.transpose(1, 2), mean.reshape(b, -1).gather(1, flat)[..., None],
                   closeness.reshape(-1)[flat][..., None], l2[..., None], cos[..., None]], -1)
    eye = torch.eye(n, device=x.device, dtype=x.dtype)
    t = (eye[src] + eye[dst]).transpose(1, 2)  # (B, N, E); a self-loop counts its node twice
    adj = torch.zeros(b, n * n, device=x.device, dtype=x.dtype).scatter_(1, flat, 1.0).view(b, n, n)
    dv = adj.sum(-1).clamp(min=1).rsqrt()
    a_v = dv[..., None] * adj * dv[:, None, :]
    shared = ((t.transpose(1, 2) @ t) > 0).to(x.dtype)  # edges sharing a node (diagonal included)
    de = (shared.sum(-1) + 1).rsqrt()
    a_e = de[..., None] * shared * de[:, None, :]
    return t, a_v, a_e, z


class CensNetLayer(nn.Module):
    """One CensNet convolution, on nodes (``node=True``) or on edges, batched and dense."""

    def __init__(self, din: int, dout: int, d_other: int, node: bool):
        super().__init__()
        self.node = node
        self.weight = nn.Parameter(torch.empty(din, dout).uniform_(-1 / math.sqrt(dout), 1 / math.sqrt(dout)))
        self.bias = nn.Parameter(torch.empty(dout).uniform_(-1 / math.sqrt(dout), 1 / math.sqrt(dout)))
        self.p = nn.Parameter(torch.randn(d_other))  # projects the other kind's features to one scalar each

    def forward(self, xv, ze, t, a_v, a_e):
        if self.node:  # X' = (T diag(Z p) Tᵀ ⊙ Â_v) X W + b
            m = (t * (ze @ self.p)[:, None, :]) @ t.transpose(1, 2)
            m = _unit_diagonal(m) * a_v
            return m @ (xv @ self.weight) + self.bias
        m = (t.transpose(1, 2) * (xv @ self.p)[:, None, :]) @ t  # Tᵀ diag(X p) T  (B, E, E)
        m = _unit_diagonal(m) * a_e
        m = m / m.amax(1, keepdim=True).clamp(min=1e-6)  # each column scaled by its maximum
        return m @ (ze @ self.weight) + self.bias


def _unit_diagonal(m: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(m.shape[-1], device=m.device, dtype=torch.bool)
    return torch.where(eye, torch.ones_like(m), m)


class GNNBlock(nn.Module):
    """Stage features ``(B, C_in, S, S)`` → graph features ``(B, N, out)`` on the ``S/patch`` node grid."""

    def __init__(self, cin: int, dim: int, patch: int, side: int, heads: int, out: int, topk: int,
                 dropout: float = 0.1):
        super().__init__()
        self.heads, self.topk, self.dropout = heads, topk, dropout
        n = side * side
        stages = [convnext_stage(cin, cin, 2), convnext_stage(cin, dim, 1)] if patch == 4 else [convnext_stage(cin, dim, 2)]
        self.convnext, self.conv_norm = nn.Sequential(*stages), nn.LayerNorm(dim)  # keys
        self.embed = PatchEmbed(cin, dim, patch)  # queries: patch embedding + a CMT block
        self.cmt = CMTBlock(dim, heads, 4.0, 1)
        self.bias = nn.Parameter(torch.randn(heads, n, n))
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        de = heads + 4
        self.gc1 = CensNetLayer(dim, dim, de, node=True)
        self.gc2 = CensNetLayer(de, 2 * de, dim, node=False)
        self.gc3 = CensNetLayer(dim, out, 2 * de, node=True)
        self.node_block = CMTBlock(out, _heads_for(out, heads), 4.0, 1)  # shares the block's position bias
        self.edge_block = TransformerBlock(2 * de, _heads_for(2 * de, heads), dropout)
        self.channel = TransformerBlock(n, _heads_for(n, 4), dropout, add_identity=True)  # over channels
        self.fuse = nn.Linear(out + 2 * de, out)
        self.register_buffer("closeness", grid_distance(side, "cpu"), persistent=False)

    def forward(self, f):
        b = f.shape[0]
        keys = self.conv_norm(grid_to_tokens(self.convnext(f)))  # (B, N, D)
        queries, hw = self.embed(f)
        queries = self.cmt(queries, hw, self.bias)
        q = self.q(queries).view(b, -1, self.heads, keys.shape[-1] // self.heads).transpose(1, 2)
        k = self.k(keys).view(b, -1, self.heads, keys.shape[-1] // self.heads).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(keys.shape[-1])
        attn = torch.softmax(logits + torch.eye(logits.shape[-1], device=f.device, dtype=logits.dtype), -1)
        x = self.v(keys)  # node features (B, N, D)
        with torch.autocast(f.device.type, enabled=False):  # graph construction in fp32 (top-k ties, rsqrt)
            t, a_v, a_e, z = build_graph(x.float(), attn.float(), self.topk, self.closeness)
        t, a_v, a_e, z = (u.to(x.dtype) for u in (t, a_v, a_e, z))
        x = F.dropout(F.relu(self.gc1(x, z, t, a_v, a_e)), self.dropout, self.training)
        z = F.dropout(F.relu(self.gc2(x, z, t, a_v, a_e)), self.dropout, self.training)
        x = self.gc3(x, z, t, a_v, a_e)  # (B, N, out)
        nodes = self.node_block(x, hw, self.bias[: self.node_block.attn.heads])
        edges = self.edge_block(t @ z / self.topk)  # edge features gathered to their nodes (B, N, 2(H+4))
        fused = torch.cat([nodes, edges], -1)
        fused = self.channel(fused.transpose(1, 2)).transpose(1, 2)
        return self.fuse(fused)


class TCGN(nn.Module):
    """``(B, 3, S, S)`` ImageNet-normalised → ``(B, M)``; ``S`` a multiple of 32 (224 in the paper)."""

    def __init__(self, n_genes: int, img_size: int = 224, **p):
        super().__init__()
        p = {**DEFAULTS, **p}
        if img_size % 32:
            raise ValueError(f"tcgn needs windows whose side is a multiple of 32 (tiling.window_px), got {img_size}")
        dims, depths, heads, srs = p["embed_dims"], p["depths"], p["num_heads"], p["sr_ratios"]
        sides = [img_size // 4, img_size // 8, img_size // 16, img_size // 32]
        for side, sr in zip(sides, srs):
            if side % sr:
                raise ValueError(f"tcgn: a {side}-token grid is not divisible by its reduction ratio {sr}; "
                                 f"use larger windows or smaller sr_ratios")
        stem = p["stem_channels"]
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, 2, 1), nn.GELU(), nn.BatchNorm2d(stem),
            nn.Conv2d(stem, stem, 3, 1, 1), nn.GELU(), nn.BatchNorm2d(stem),
            nn.Conv2d(stem, stem, 3, 1, 1), nn.GELU(), nn.BatchNorm2d(stem))
        cins = [stem] + list(dims[:-1])
        self.embeds = nn.ModuleList([PatchEmbed(c, d, 2) for c, d in zip(cins, dims)])
        dpr = torch.linspace(0, p["drop_path"], sum(depths)).tolist()
        offsets = [sum(depths[:i]) for i in range(4)]
        self.stages = nn.ModuleList([Stage(dims[i], depths[i], heads[i], p["mlp_ratio"], srs[i], sides[i],
                                           dpr[offsets[i]:offsets[i] + depths[i]]) for i in range(4)])
        side_g = sides[2]
        self.gnn0 = GNNBlock(dims[0], 2 * dims[0], 4, side_g, p["gnn_heads"], p["gnn_out"], p["topk"], p["dropout"])
        self.gnn1 = GNNBlock(dims[1], 2 * dims[1], 2, side_g, p["gnn_heads"], p["gnn_out"], p["topk"], p["dropout"])
        self.channel0 = ChannelAttention(side_g * side_g, p["dropout"])
        self.channel1 = ChannelAttention(side_g * side_g, p["dropout"])
        fc = p["fc_dim"]
        self.head_conv = nn.Sequential(nn.Conv2d(dims[-1], fc, 1), nn.BatchNorm2d(fc), nn.SiLU())
        self.head = nn.Sequential(nn.Dropout(p["dropout"]), nn.Linear(fc, 4 * fc), nn.GELU(), nn.Linear(4 * fc, n_genes))
        self.apply(init_weights)


    def features(self, batch: dict) -> torch.Tensor:
        """The pooled representation the head reads, ``(B, fc_dim)``."""
        x, hw = self.embeds[0](self.stem(batch["image"]))
        x = tokens_to_grid(self.stages[0](x, hw), hw)  # (B, 46, S/4, S/4)
        g0 = self.gnn0(x)  # (B, N, 48)
        x, hw = self.embeds[1](x)
        x = tokens_to_grid(self.stages[1](x, hw), hw)  # (B, 92, S/8, S/8)
        g1 = self.gnn1(x)
        x, hw = self.embeds[2](x)  # (B, N, 184)
        x = self.channel1(self.stages[2](self.channel0(x, g0), hw), g1)
        x, hw = self.embeds[3](tokens_to_grid(x, hw))
        x = tokens_to_grid(self.stages[3](x, hw), hw)  # (B, 368, S/32, S/32)
        return self.head_conv(x).mean((2, 3))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.features(batch))


@register_model("tcgn", kind="neural", needs=("windows",), description="TCGN: CMT + GNN + Transformer backbone")
def build_tcgn(n_genes: int, params: dict, img_size: int, **_) -> nn.Module:
    p = {**DEFAULTS, **(params or {})}
    model = TCGN(n_genes, img_size, **{k: v for k, v in p.items() if k in DEFAULTS and k != "pretrained_checkpoint"})
    load_pretrained(model, p.get("pretrained_checkpoint"), "tcgn")
    return model
