"""EGN (model C): shapes through every block and variant, the EB equations, exemplar masking, the PCC loss."""

import numpy as np
import pytest
import torch

from histexpr.models import get_model
from histexpr.models.egn import EGN, EBBlock, Projector, masked_mean
from histexpr.train.losses import mse_pcc_loss

SMALL = dict(patch_size=8, embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0, drop_path=0.0, eb_heads=2,
             eb_head_dim=8, frequency=2, n_exemplars=3)


def batch(b=4, k=5, d=6, m=7, px=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(b, 3, px, px, generator=g), "embedding": torch.randn(b, d, generator=g),
            "exemplar_embedding": torch.randn(b, k, d, generator=g), "exemplar_target": torch.rand(b, k, m, generator=g),
            "exemplar_mask": torch.ones(b, k, dtype=torch.bool), "target": torch.rand(b, m, generator=g)}


@pytest.mark.parametrize("name", ["egn", "egn_backbone_only", "egn_no_eb_block", "egn_no_projector",
                                  "egn_pretrained_e_linear"])
def test_every_variant_forward_backward(name):
    model = get_model(name).factory(7, SMALL, img_size=32, d_code=6)
    b = batch()
    y = model(b)
    assert y.shape == (4, 7) and torch.isfinite(y).all()
    y.sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    # the last EB block's r/s updates feed nothing downstream, as in the paper's equations
    assert all(".mlp_s." in n or "mlp_m" in n for n in unused), unused


def test_shapes_through_each_block():
    b = batch()
    proj = Projector(6, 7, 32)
    h, r, s = proj(b["embedding"], b["exemplar_embedding"], b["exemplar_target"])
    assert h.shape == (4, 32) and r.shape == s.shape == (4, 5, 32)
    eb = EBBlock(32, n_patches=16, heads=2, head_dim=8)
    z = torch.randn(4, 16, 32)
    z2, h2, r2, s2 = eb(z, h, r, s, b["exemplar_mask"])
    assert z2.shape == z.shape and h2.shape == h.shape and r2.shape == r.shape and s2.shape == s.shape
    model = EGN(7, 32, 6, **SMALL)
    assert len(model.eb) == 2 and set(model.eb) == {"1", "3"}  # after every 2nd of 4 ViT blocks
    assert model.features(b).shape == (4, 64)  # [h^T, AttPool(Z^T)]


def test_eb_block_equations_on_a_hand_computable_case():
    """C = 2, one exemplar pair, L = 2 patches, one head of dim 1; every equation evaluated by hand in numpy."""
    torch.manual_seed(0)
    eb = EBBlock(2, n_patches=2, heads=1, head_dim=1)
    with torch.no_grad():
        for p in eb.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    z = torch.tensor([[[1.0, -1.0], [0.5, 2.0]]])
    h = torch.tensor([[0.2, -0.4]])
    r = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    s = torch.tensor([[[0.3, 0.6], [-0.5, 0.1]]])
    mask = torch.tensor([[True, False]])  # the second exemplar is missing: it must not count
    z2, h2, r2, s2 = eb(z, h, r, s, mask)

    P = {k: v.detach().numpy().astype(np.float64) for k, v in eb.state_dict().items()}
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    lin = lambda x, name: x @ P[f"{name}.weight"].T + P[f"{name}.bias"]  # noqa: E731
    Z, Hh, Rr, Ss = z[0].numpy(), h[0].numpy(), r[0].numpy(), s[0].numpy()
    s_new = lin(Ss, "mlp_s")  # s^{t+1} = MLP_s(s^t)
    inp = np.concatenate([np.repeat(Hh[None], 2, 0), Hh[None] - Rr], 1)
    hid = lin(inp, "mlp_m.0")
    m = sig(lin(hid * sig(hid), "mlp_m.2"))  # SiLU inside MLP_m, then σ
    m_h, m_r = m[:, :2], m[:, 2:]
    h_hat = Hh + (m_h * s_new)[0]  # average over the one valid exemplar
    r_new = Rr + m_r * s_new
    mu, var = Z.mean(1, keepdims=True), Z.var(1, keepdims=True)
    zn = (Z - mu) / np.sqrt(var + 1e-5) * P["norm_z.weight"] + P["norm_z.bias"]
    scale = sig(lin(h_hat, "mlp_k"))  # one scalar per patch (one head)
    o = lin(zn, "mlp_o") * scale[:, None]  # (L, 2d)
    o_h, o_z = o[:, :1], o[:, 1:]
    z_new = Z + lin(o_z, "mlp_z")
    h_new = h_hat + lin(o_h.mean(0), "mlp_n")
    np.testing.assert_allclose(s2[0].detach().numpy(), s_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r2[0].detach().numpy(), r_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z2[0].detach().numpy(), z_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h2[0].detach().numpy(), h_new, rtol=1e-5, atol=1e-6)


def test_masked_exemplars_change_nothing():
    model = EGN(7, 32, 6, **SMALL).eval()
    b = batch()
    b["exemplar_mask"][:, 2:] = False
    out = model(b)
    b2 = {k: v.clone() for k, v in b.items()}
    b2["exemplar_embedding"][:, 2:] = 100.0  # garbage in masked slots
    b2["exemplar_target"][:, 2:] = -50.0
    torch.testing.assert_close(model(b2), out)
    assert masked_mean(torch.ones(1, 3, 2), torch.zeros(1, 3, dtype=torch.bool)).abs().sum() == 0
    # only the first n_exemplars are read
    b3 = {k: v.clone() for k, v in batch().items()}
    ref = model(b3)
    b3["exemplar_embedding"][:, 3:] = 1e3
    torch.testing.assert_close(model(b3), ref)


def test_pcc_loss_is_one_minus_mean_pearson():
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    loss, parts = mse_pcc_loss(pred, target, pcc_weight=0.7)
    r = np.mean([np.corrcoef(pred[:, j].numpy(), target[:, j].numpy())[0, 1] for j in range(5)])
    mse = float(((pred - target) ** 2).mean())
    assert float(loss) == pytest.approx(mse + 0.7 * (1 - r), rel=1e-5)
    assert parts["pcc"] == pytest.approx(r, rel=1e-5)
