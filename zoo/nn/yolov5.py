"""YOLOv5-era blocks (Jocher et al., Ultralytics 2020): the bottleneck, the C3 CSP family, SPP/SPPF, Focus.

YOLOv3/v5/v8 YAMLs use them as rows; later families (C3k, C3k2, GhostBottleneck) build on them.
Attribute names follow the Ultralytics checkpoints so their weights load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nn.common import Conv
from zoo.registry import register
from zoo.wiring import RowContext, Wired, custom, in_out, same_size

__all__ = ["Bottleneck", "C3", "SPPF"]


@register(wiring=in_out(spatial=same_size()))
class Bottleneck(nn.Module):
    """Two convs with an optional residual. ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1,
                 k: tuple[int, int] = (3, 3), e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, k[0], 1)
        self.cv2 = Conv(hidden, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


@register(wiring=in_out(repeats_at=2, spatial=same_size()))
class C3(nn.Module):
    """CSP bottleneck with three convs: ``cv3(cat(m(cv1(x)), cv2(x)))``. ``(B, c1, H, W) -> (B, c2, H, W)``.

    The ``n`` inner blocks come from :meth:`_block` (1x1 -> 3x3 bottlenecks here), which subclasses
    (C3x, C3k, C3Ghost, C3TR) replace; ``self.c_`` is the hidden width ``int(c2 * e)``.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        self.c_ = int(c2 * e)
        self.cv1 = Conv(c1, self.c_, 1, 1)
        self.cv2 = Conv(c1, self.c_, 1, 1)
        self.cv3 = Conv(2 * self.c_, c2, 1)
        self.m = self._blocks(n, shortcut, g)

    def _blocks(self, n: int, shortcut: bool, g: int) -> nn.Module:
        return nn.Sequential(*(Bottleneck(self.c_, self.c_, shortcut, g, k=(1, 3), e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


def _wire_sppf(ctx: RowContext) -> Wired:
    wired = in_out()(ctx)
    # Ultralytics 8.4: a row giving only [c2, k] is the YOLOv5/v8/v10/11 SPPF, whose first conv has an
    # activation; a row that also gives n or shortcut is YOLO26's, whose first conv has none
    wired.kwargs["cv1_act"] = len(ctx.args) <= 2
    return wired


@register(wiring=custom(_wire_sppf, "(c1, c2*width, k=5, n=3, shortcut=False); cv1 activated unless n/shortcut given",
                        same_size()))
class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: ``n`` chained max-pools concatenated. ``(B,c1,H,W)->(B,c2,H,W)``.

    ``n`` and ``shortcut`` are the YOLO26 extensions; ``cv1_act=False`` leaves the first conv
    unactivated as YOLO26 does. The defaults give the YOLOv5/v8/v10 block.
    """

    def __init__(self, c1: int, c2: int, k: int = 5, n: int = 3, shortcut: bool = False, cv1_act: bool = True) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1, act=cv1_act)
        self.cv2 = Conv(hidden * (n + 1), c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.n = n
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(self.n):
            y.append(self.m(y[-1]))
        out = self.cv2(torch.cat(y, 1))
        return x + out if self.add else out
