"""Classification loss: cross-entropy with label smoothing (Szegedy et al., "Rethinking the
Inception Architecture", arXiv:1512.00567)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ClassificationLoss"]


class ClassificationLoss(nn.Module):
    """``forward(logits, batch) -> (loss, {"cls": float})``; ``logits`` (B, C), ``batch["cls"]`` (B,)."""

    item_names = ("cls",)

    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor | tuple | list, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        if isinstance(logits, (tuple, list)):  # heads that return (logits, extras)
            logits = logits[0]
        target = batch["cls"].to(logits.device)
        loss = F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)
        return loss, {"cls": float(loss.detach())}
