"""GhostNet blocks (Han et al., 2020) as Ultralytics uses them: GhostConv, GhostBottleneck and C3Ghost.

A Ghost conv makes half its output channels with an ordinary conv and the other half from those with a
cheap 5x5 depthwise conv, for about half the parameters. Attribute names follow the Ultralytics
checkpoints so their weights load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nn.common import Conv, DWConv
from zoo.nn.yolov5 import C3
from zoo.registry import register
from zoo.wiring import in_out, same_size, stride_arg

__all__ = ["GhostConv", "GhostBottleneck", "C3Ghost"]


@register(wiring=in_out(spatial=stride_arg(3)))
class GhostConv(nn.Module):
    """``cat(y, cv2(y))`` with ``y = cv1(x)``, each ``c2 // 2`` channels.
    ``(B, c1, H, W) -> (B, c2, H/s, W/s)`` (``c2`` even)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool | nn.Module = True) -> None:
        super().__init__()
        half = c2 // 2
        self.cv1 = Conv(c1, half, k, s, None, g, act=act)
        self.cv2 = Conv(half, half, 5, 1, None, half, act=act)  # the cheap depthwise "ghost" features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return torch.cat((y, self.cv2(y)), 1)


@register(wiring=in_out(spatial=stride_arg(3)))
class GhostBottleneck(nn.Module):
    """Ghost conv -> (stride 2: depthwise kxk conv) -> linear ghost conv, plus a shortcut (identity, or
    at stride 2 a depthwise conv and a 1x1 conv). ``(B, c1, H, W) -> (B, c2, H/s, W/s)``, ``s`` 1 or 2;
    at ``s=1`` the identity shortcut needs ``c1 == c2``."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1) -> None:
        super().__init__()
        if s not in (1, 2):
            # Ultralytics silently builds a stride-1 block for any other s; say so instead
            raise ValueError(f"GhostBottleneck stride s must be 1 or 2, got {s!r}")
        if s == 1 and c1 != c2:  # caught here rather than as a shape error in the first forward
            raise ValueError(f"GhostBottleneck at stride 1 adds its input back, so c1 ({c1}) must equal c2 ({c2})")
        half = c2 // 2
        downsample = s == 2
        self.conv = nn.Sequential(
            GhostConv(c1, half, 1, 1),
            DWConv(half, half, k, s, act=False) if downsample else nn.Identity(),
            GhostConv(half, c2, 1, 1, act=False),
        )
        self.shortcut = (nn.Sequential(DWConv(c1, c1, k, s, act=False), Conv(c1, c2, 1, 1, act=False))
                         if downsample else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.shortcut(x)


@register(wiring=in_out(repeats_at=2, spatial=same_size()))
class C3Ghost(C3):
    """C3 whose ``n`` inner blocks are stride-1 :class:`GhostBottleneck` s (``shortcut`` and ``g``
    have no effect there). ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def _blocks(self, n: int, shortcut: bool, g: int) -> nn.Module:
        return nn.Sequential(*(GhostBottleneck(self.c_, self.c_) for _ in range(n)))
