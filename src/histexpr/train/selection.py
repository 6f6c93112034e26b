"""Model selection on the validation split: keep the best epoch's weights, stop when it stops improving."""

from __future__ import annotations

import copy

import torch


class BestEpoch:
    """Tracks the best-scoring epoch (higher is better; scores may be tuples) and its weights."""

    def __init__(self, patience: int):
        self.patience, self.best, self.epoch, self.state, self.since = patience, None, 0, None, 0

    def update(self, model: torch.nn.Module, epoch: int, score) -> bool:
        """Record ``epoch``'s ``score``; True (and the weights kept) when it is the best so far."""
        if self.best is None or score > self.best:
            self.best, self.epoch, self.since = score, epoch, 0
            self.state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            return True
        self.since += 1
        return False

    @property
    def stale(self) -> bool:
        """No improvement for ``patience`` epochs."""
        return self.since >= self.patience

    def restore(self, model: torch.nn.Module) -> int:
        """Load the best weights into ``model``; returns the best epoch."""
        model.load_state_dict(self.state)
        return self.epoch
