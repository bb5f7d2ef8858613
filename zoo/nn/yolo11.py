"""YOLO11 blocks (Jocher & Qiu, Ultralytics 2024): C3k, C3k2 and the PSA-based C2PSA / C2fPSA.

YOLO12 and YOLO26 reuse them (YOLO26 with C3k2's attention flag). They build on the C3 and C2f
skeletons of :mod:`zoo.nn.yolov5` / :mod:`zoo.nn.yolov8` and on YOLOv10's multi-head
:class:`~zoo.nn.yolov10.Attention`. Attribute names follow the Ultralytics checkpoints so their
weights load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nn.common import Conv
from zoo.nn.yolov5 import C3, Bottleneck
from zoo.nn.yolov8 import C2f
from zoo.nn.yolov10 import Attention, psa_heads
from zoo.registry import register
from zoo.wiring import RowContext, Wired, custom, in_out, passthrough, same_size

__all__ = ["C3k", "C3k2", "PSABlock", "C2PSA", "C2fPSA"]

# Ultralytics 8.4's parse_model switches every C3k2 row to C3k inner blocks at these scales
C3K_SCALES = frozenset({"m", "l", "x"})


# Ultralytics' parse_model does not wire C3k (nor PSABlock): a row naming one gets its args as written
# there (c1 included, nothing scaled, the row's repeats stacked as copies), and so it does here
@register(wiring=passthrough(same_size()))
class C3k(C3):
    """C3 whose ``n`` bottlenecks use ``k x k`` convs on both sides. ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5,
                 k: int = 3) -> None:
        self._k = k  # read by _blocks during C3.__init__
        super().__init__(c1, c2, n, shortcut, g, e)

    def _blocks(self, n: int, shortcut: bool, g: int) -> nn.Module:
        kernels = (self._k, self._k)
        return nn.Sequential(*(Bottleneck(self.c_, self.c_, shortcut, g, k=kernels, e=1.0) for _ in range(n)))


@register(wiring=passthrough(same_size()))
class PSABlock(nn.Module):
    """Multi-head attention then a 1x1 FFN (2x wide), each with an optional residual.

    ``(B, c, H, W) -> (B, c, H, W)``; ``c`` must be divisible by ``num_heads``.
    """

    def __init__(self, c: int, attn_ratio: float = 0.5, num_heads: int = 4, shortcut: bool = True) -> None:
        super().__init__()
        self.attn = Attention(c, attn_ratio=attn_ratio, num_heads=num_heads)
        self.ffn = nn.Sequential(Conv(c, c * 2, 1), Conv(c * 2, c, 1, act=False))
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x) if self.add else self.attn(x)
        return x + self.ffn(x) if self.add else self.ffn(x)


def _wire_c3k2(ctx: RowContext) -> Wired:
    wired = in_out(repeats_at=2)(ctx)
    if ctx.scale in C3K_SCALES:
        # arg 3 (c3k) is forced on, and supplied when the row leaves it out, as Ultralytics does
        wired.args[3:4] = [True]
    return wired


@register(wiring=custom(_wire_c3k2, "(c1, c2*width, n, c3k=False, e=0.5, attn=False, g=1, shortcut=True); "
                                    "c3k forced True at scales m/l/x", same_size()))
class C3k2(C2f):
    """C2f whose inner blocks are, per flag: a plain bottleneck (half-width hidden layer, unlike
    C2f's), a two-bottleneck :class:`C3k` (``c3k``), or a bottleneck followed by a
    :class:`PSABlock` (``attn``, YOLO26; it wins over ``c3k``). ``(B, c1, H, W) -> (B, c2, H, W)``.
    """

    depthwise_detect_cls = True  # a Detect head after it gets the lightweight class branch (as in Ultralytics)

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5, attn: bool = False,
                 g: int = 1, shortcut: bool = True) -> None:
        self._c3k = c3k  # read by _block during C2f.__init__
        self._attn = attn
        super().__init__(c1, c2, n, shortcut, g, e)

    def _block(self, shortcut: bool, g: int) -> nn.Module:
        if self._attn:
            return nn.Sequential(Bottleneck(self.c, self.c, shortcut, g),
                                 PSABlock(self.c, attn_ratio=0.5, num_heads=psa_heads(self.c)))
        if self._c3k:
            return C3k(self.c, self.c, 2, shortcut, g)
        return Bottleneck(self.c, self.c, shortcut, g)


@register(wiring=in_out(repeats_at=2, spatial=same_size()))
class C2PSA(nn.Module):
    """Half the channels pass through ``n`` stacked :class:`PSABlock`; the other half skip them.

    ``(B, c1, H, W) -> (B, c1, H, W)``: the block keeps its channel count (``c2`` must equal ``c1``).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5) -> None:
        super().__init__()
        if c1 != c2:
            raise ValueError(f"C2PSA keeps the channel count: got c1={c1}, c2={c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        self.m = nn.Sequential(*(PSABlock(self.c, attn_ratio=0.5, num_heads=psa_heads(self.c)) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skipped, attended = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((skipped, self.m(attended)), 1))


@register(wiring=in_out(repeats_at=2, spatial=same_size()))
class C2fPSA(C2f):
    """C2f with :class:`PSABlock` inner blocks. ``(B, c1, H, W) -> (B, c1, H, W)`` (``c2 == c1``)."""

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5) -> None:
        if c1 != c2:
            raise ValueError(f"C2fPSA keeps the channel count: got c1={c1}, c2={c2}")
        super().__init__(c1, c2, n=n, e=e)

    def _block(self, shortcut: bool, g: int) -> nn.Module:
        return PSABlock(self.c, attn_ratio=0.5, num_heads=psa_heads(self.c))
