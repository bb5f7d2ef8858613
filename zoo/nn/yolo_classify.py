"""The YOLO classification head (``Classify``) of Ultralytics' ``*-cls`` YAMLs (YOLOv8, YOLO11, YOLO12, YOLO26).

A 1x1 (or ``k`` x ``k``) Conv-BN-SiLU to 1280 channels (EfficientNet-B0's head width), global average
pooling, dropout and a Linear to the classes. zoo's own head for timm-style backbones, with its
optional expansion and norm, is :class:`zoo.nn.classifier_head.ClassifierHead`.
Attribute names follow Ultralytics' checkpoints so their weights load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nn.common import Conv
from zoo.registry import register
from zoo.wiring import RowContext, Wired, custom, not_a_map

__all__ = ["Classify", "CLASSIFY_WIDTH"]

CLASSIFY_WIDTH = 1280  # the hidden width Ultralytics' Classify always expands to


def _wire_classify(ctx: RowContext) -> Wired:
    args = list(ctx.args)
    if not args:
        raise ValueError("expects [nc, k=1, s=1, p=None, g=1]")
    nc = args[0]
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ValueError(f"the class count (first arg) must be a positive integer, got {nc!r}")
    # the class count is never width-scaled (Ultralytics treats Classify like a conv row otherwise)
    return Wired([ctx.c_in if isinstance(ctx.c_in, int) else sum(ctx.c_in), *args], ctx.repeats, nc)


@register(wiring=custom(_wire_classify, "(c1, nc, k=1, s=1, p=None, g=1) -> 1280-wide conv, pool, Linear", not_a_map()))
class Classify(nn.Module):
    """Ultralytics' classification head: ``(B, c1, H, W)`` (or a list of maps, concatenated) ``-> (B, nc)``
    raw logits, in training and eval alike (zoo's classify contract; the task applies the softmax)."""

    task = "classify"

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1) -> None:
        super().__init__()
        self.conv = Conv(c1, CLASSIFY_WIDTH, k, s, p, g)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=0.0)
        self.linear = nn.Linear(CLASSIFY_WIDTH, c2)
        self.out_channels = c2

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if isinstance(x, list):
            x = torch.cat(x, 1)
        return self.linear(self.drop(self.pool(self.conv(x)).flatten(1)))
