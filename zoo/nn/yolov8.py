"""YOLOv8 blocks (Jocher et al., Ultralytics 2023): C2f, its simpler relatives C1 and C2, and the DFL
integral of the box branches.

Attribute names follow the Ultralytics checkpoints so their weights load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nn.common import Conv
from zoo.nn.yolov5 import Bottleneck
from zoo.ops.anchors import dfl_expectation
from zoo.registry import register
from zoo.wiring import in_out, same_size

__all__ = ["C2f", "DFL", "C1", "C2"]


@register(wiring=in_out(repeats_at=2, spatial=same_size()))
class C2f(nn.Module):
    """CSP block with ``n`` bottlenecks whose every output is concatenated (YOLOv8).

    ``(B, c1, H, W) -> (B, c2, H, W)``; hidden width ``c = int(c2 * e)``.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(self._block(shortcut, g) for _ in range(n))

    def _block(self, shortcut: bool, g: int) -> nn.Module:
        return Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss integral: expected value of a ``c1``-bin distribution.

    ``(B, 4*c1, A) -> (B, 4, A)``. The fixed projection is a (frozen) 1x1 conv, as in Ultralytics.
    """

    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        probs = x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)
        return self.conv(probs).view(b, 4, a)

    def expectation(self, x: torch.Tensor) -> torch.Tensor:
        """The same integral with the bins innermost: ``(..., 4*c1) -> (..., 4)`` (the softmax then
        runs over contiguous memory, and no transposed copy is made)."""
        return dfl_expectation(x, self.conv.weight.view(self.c1))


@register(wiring=in_out(repeats_at=2, spatial=same_size()))
class C1(nn.Module):
    """A 1x1 Conv, then ``n`` 3x3 Convs with a residual around them. ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, n: int = 1) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 1, 1)
        self.m = nn.Sequential(*(Conv(c2, c2, 3) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return self.m(y) + y


@register(wiring=in_out(repeats_at=2, spatial=same_size()))
class C2(nn.Module):
    """CSP block with two convs: half of ``cv1``'s output goes through ``n`` 3x3 bottlenecks, the other
    half around them. ``(B, c1, H, W) -> (B, c2, H, W)``; hidden width ``c = int(c2 * e)``."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).chunk(2, 1)
        return self.cv2(torch.cat((self.m(a), b), 1))
