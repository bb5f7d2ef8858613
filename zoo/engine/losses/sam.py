"""Segment Anything training loss: focal x20 + dice on the best candidate mask, MSE on the IoU head.

Kirillov et al., "Segment Anything", arXiv:2304.02643 (Sec. 3 and App. A "Training algorithm": a
20:1 linear combination of focal and dice loss; with several candidate masks only the one with the
lowest loss is back-propagated; the IoU head regresses the IoU of each predicted mask with the
ground truth by mean squared error). Focal loss: Lin et al., arXiv:1708.02002 (alpha 0.25, gamma 2).
Dice loss: Milletari et al., "V-Net", arXiv:1606.04797.

``preds`` is the SAM head's output for ``N`` prompt sets per image: ``masks (B, N, K, h, w)`` logits
(``h, w`` a quarter of the input) and ``iou (B, N, K)``. ``batch["sam_targets"]`` holds the ground
truth masks ``(B, N, H, W)`` at input resolution and ``batch["sam_valid"] (B, N)`` which prompt sets
are real (an image with fewer instances than ``N`` pads with invalid sets).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SamLoss", "focal_loss_per_mask", "dice_loss_per_mask", "mask_iou_per_mask"]


def focal_loss_per_mask(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25,
                        gamma: float = 2.0) -> torch.Tensor:
    """Mean sigmoid focal loss over pixels: ``(..., H, W)`` logits and 0/1 targets -> ``(...)``."""
    p = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    weight = (alpha * target + (1 - alpha) * (1 - target)) * (1 - p_t) ** gamma
    return (weight * bce).flatten(-2).mean(-1)


def dice_loss_per_mask(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft dice loss ``1 - (2|P.T| + s) / (|P| + |T| + s)``: ``(..., H, W)`` -> ``(...)``."""
    p = logits.sigmoid().flatten(-2)
    t = target.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)


def mask_iou_per_mask(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` with a 0/1 target: ``(..., H, W)`` -> ``(...)`` (1 when both are empty)."""
    pred = (logits > 0).flatten(-2)
    t = target.flatten(-2) > 0.5
    inter = (pred & t).sum(-1).float()
    union = (pred | t).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


class SamLoss(nn.Module):
    """``forward(preds, batch) -> (loss, {"focal", "dice", "iou"})``.

    Masks are upsampled to the ground truth's resolution before scoring (the IoU target, and hence
    validation, is measured there). ``focal_weight`` 20, ``dice_weight`` 1, ``iou_weight`` 1 as in SAM.
    """

    item_names = ("focal", "dice", "iou")

    def __init__(self, focal_weight: float = 20.0, dice_weight: float = 1.0, iou_weight: float = 1.0) -> None:
        super().__init__()
        self.focal_weight, self.dice_weight, self.iou_weight = focal_weight, dice_weight, iou_weight

    def forward(self, preds: tuple[torch.Tensor, torch.Tensor], batch: dict[str, Any]
                ) -> tuple[torch.Tensor, dict[str, float]]:
        masks, iou_pred = preds
        target = batch["sam_targets"].float()  # (B, N, H, W)
        valid = batch["sam_valid"]  # (B, N)
        if masks.dim() == 4:  # one prompt set per image
            masks, iou_pred = masks.unsqueeze(1), iou_pred.unsqueeze(1)
        b, n, k, h, w = masks.shape
        size = target.shape[-2:]
        logits = F.interpolate(masks.flatten(0, 1).float(), size=size, mode="bilinear",
                               align_corners=False).view(b, n, k, *size)
        tgt = target.unsqueeze(2).expand_as(logits)
        focal = focal_loss_per_mask(logits, tgt)  # (B, N, K)
        dice = dice_loss_per_mask(logits, tgt)
        combined = self.focal_weight * focal + self.dice_weight * dice
        best = combined.detach().argmin(-1, keepdim=True)  # only the best candidate learns its mask
        with torch.no_grad():
            true_iou = mask_iou_per_mask(logits, tgt)
        iou_err = (iou_pred.float() - true_iou) ** 2  # every candidate learns its own quality
        weight = valid.float()
        count = weight.sum().clamp(min=1.0)
        focal_b = (focal.gather(-1, best).squeeze(-1) * weight).sum() / count
        dice_b = (dice.gather(-1, best).squeeze(-1) * weight).sum() / count
        iou_b = (iou_err.mean(-1) * weight).sum() / count
        parts = (self.focal_weight * focal_b, self.dice_weight * dice_b, self.iou_weight * iou_b)
        loss = parts[0] + parts[1] + parts[2]
        return loss, {name: float(v.detach()) for name, v in zip(self.item_names, parts)}
