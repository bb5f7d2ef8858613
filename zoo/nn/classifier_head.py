"""Image-classification head: optional 1x1 expansion -> global average pool -> optional norm -> Linear.

Covers the heads of the transformer backbones in this zoo:
TinyViT (arXiv:2207.10666): pool -> LayerNorm -> Linear (timm's ``head.norm`` / ``head.fc``);
MobileViT (arXiv:2110.02178): 1x1 Conv-BN-SiLU expansion (timm's ``final_conv``) -> pool -> Linear;
MobileViTv2 (arXiv:2206.02680): pool -> Linear.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nn.common import fuse_conv_bn
from zoo.registry import register
from zoo.wiring import RowContext, Wired, custom, not_a_map

__all__ = ["ClassifierHead"]


def _wire_classify(ctx: RowContext) -> Wired:
    if not ctx.args:
        raise ValueError("expects [nc, expand_channels, norm, dropout] (only nc is required)")
    c1 = ctx.single_input()
    args = list(ctx.args)
    nc = args[0]
    if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
        raise ValueError(f"the class count (first arg) must be a positive integer, got {nc!r}")
    if len(args) > 1:
        expand = args[1]
        if not isinstance(expand, int) or isinstance(expand, bool) or expand < 0:
            raise ValueError(f"expand must be >= 0 channels (0 for none), got {expand!r}")
        if expand:
            args[1] = ctx.scale_width(expand)  # the expansion is a width like any other
    return Wired([c1, *args], ctx.repeats, nc)


@register(wiring=custom(_wire_classify, "(c1, nc, expand*width=0, norm=False, dropout=0.0)", not_a_map()))
class ClassifierHead(nn.Module):
    """Classification head. ``(B, c1, H, W) -> (B, nc)`` raw logits (train and eval alike).

    Args:
        c1: input channels.
        nc: number of classes.
        expand: if > 0, a 1x1 Conv2d -> BatchNorm2d(eps 1e-5) -> SiLU to ``expand`` channels
            before pooling (MobileViT v1's ``final_conv``); its output is what timm calls the
            features (:meth:`features`).
        norm: LayerNorm (eps 1e-5) over the pooled channels (TinyViT).
        dropout: dropout rate before the Linear (training only).
    """

    task = "classify"

    def __init__(self, c1: int, nc: int, expand: int = 0, norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if expand < 0:
            raise ValueError(f"expand must be >= 0 channels, got {expand}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.expand: nn.Sequential | None = None
        c = c1
        if expand:
            self.expand = nn.Sequential()
            self.expand.add_module("conv", nn.Conv2d(c1, expand, 1, bias=False))
            self.expand.add_module("bn", nn.BatchNorm2d(expand))
            self.expand.add_module("act", nn.SiLU())
            c = expand
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.norm = nn.LayerNorm(c) if norm else None
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(c, nc)
        self.out_channels = nc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The map the classifier pools: ``(B, c1, H, W) -> (B, expand or c1, H, W)``."""
        return x if self.expand is None else self.expand(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        if self.norm is not None:
            x = self.norm(x)
        return self.fc(self.drop(x))

    def fuse(self) -> None:
        """Fold the expansion's BN into its conv (idempotent)."""
        if self.expand is not None and isinstance(getattr(self.expand, "bn", None), nn.BatchNorm2d):
            self.expand.conv = fuse_conv_bn(self.expand.conv, self.expand.bn)
            self.expand.bn = nn.Identity()
