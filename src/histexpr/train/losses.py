"""Losses for expression regression."""

from __future__ import annotations

import torch


def batch_pcc(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-gene Pearson correlation over the batch: ``(B, G), (B, G) → (G,)``."""
    p = pred - pred.mean(dim=0, keepdim=True)
    t = target - target.mean(dim=0, keepdim=True)
    return (p * t).sum(0) / (p.pow(2).sum(0).sqrt() * t.pow(2).sum(0).sqrt() + eps)


def mse_pcc_loss(pred: torch.Tensor, target: torch.Tensor, pcc_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """``L = MSE(ŷ, y) + w · (1 - mean_g PCC_g)``, the PCC taken over the batch."""
    mse = torch.mean((pred - target) ** 2)
    loss = mse
    pcc = torch.zeros((), device=pred.device)
    if pcc_weight and pred.shape[0] > 1:
        pcc = batch_pcc(pred, target).mean()
        loss = mse + pcc_weight * (1.0 - pcc)
    return loss, {"mse": float(mse.detach()), "pcc": float(pcc.detach())}
