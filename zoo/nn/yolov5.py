"""YOLOv3/v5-era blocks (Jocher et al., Ultralytics 2020): the bottleneck, the CSP family (BottleneckCSP,
C3, C3x, C3TR with its transformer), SPP/SPPF and Focus.

YOLOv3/v5/v8 YAMLs use them as rows; later families (C3k, C3k2, C3Ghost) build on them.
Attribute names follow the Ultralytics checkpoints so their weights load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nn.common import ULTRA_BN_EPS, ULTRA_BN_MOMENTUM, Conv, fuse_conv_bn
from zoo.nn.multihead_attention import MultiheadAttention
from zoo.registry import register
from zoo.wiring import RowContext, Stride, Wired, custom, in_out, same_size, stride_arg

__all__ = ["Bottleneck", "BottleneckCSP", "C3", "C3x", "C3TR", "TransformerLayer", "TransformerBlock",
           "SPP", "SPPF", "Focus"]


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

    The ``n`` inner blocks come from :meth:`_blocks` (1x1 -> 3x3 bottlenecks here), which subclasses
    (C3x, C3k, C3Ghost, C3TR) replace; ``self.c_`` is the hidden width ``int(c2 * e)``.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        self.c_ = int(c2 * e)
        self.cv1 = Conv(c1, self.c_, 1, 1)
        self.cv2 = Conv(c1, self.c_, 1, 1)
        self.cv3 = Conv(2 * self.c_, c2, 1)
        self.m = self._blocks(n, shortcut, g)
        self.out_channels = c2  # read by the builder for subclasses wired with their args as written (C3k, RepCSP)

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


def _bn_slice(bn: nn.BatchNorm2d, start: int, end: int) -> nn.BatchNorm2d:
    """The BatchNorm over channels ``start:end`` of ``bn`` (its eval statistics and affine params)."""
    part = nn.BatchNorm2d(end - start, eps=bn.eps).to(device=bn.running_mean.device, dtype=bn.running_mean.dtype)
    part.running_mean.copy_(bn.running_mean[start:end])
    part.running_var.copy_(bn.running_var[start:end])
    part.weight.data.copy_(bn.weight.data[start:end])
    part.bias.data.copy_(bn.bias.data[start:end])
    return part


@register(wiring=in_out(repeats_at=2, spatial=same_size()))
class BottleneckCSP(nn.Module):
    """Cross-stage-partial bottleneck with four convs (YOLOv4/v5 CSP, Wang et al. 2019).
    ``(B, c1, H, W) -> (B, c2, H, W)``.

    ``cv4(act(bn(cat(cv3(m(cv1(x))), cv2(x)))))``: ``cv2``/``cv3`` are plain bias-free convs sharing
    one BatchNorm over their concatenation. :meth:`fuse` folds that norm's halves into them (a step
    Ultralytics leaves out; the output is the same).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = nn.Conv2d(c1, hidden, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(hidden, hidden, 1, 1, bias=False)
        self.cv4 = Conv(2 * hidden, c2, 1, 1)
        # Ultralytics sets eps/momentum of every BatchNorm in a model it builds, this one included
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(2 * hidden, eps=ULTRA_BN_EPS, momentum=ULTRA_BN_MOMENTUM)
        self.act = nn.SiLU()
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat((self.cv3(self.m(self.cv1(x))), self.cv2(x)), 1)
        if self.bn is not None:
            y = self.bn(y)
        return self.cv4(self.act(y))

    def fuse(self) -> None:
        """Fold the shared BatchNorm into ``cv3`` (first half of its channels) and ``cv2`` (second half)."""
        if self.bn is None:
            return
        hidden = self.cv3.out_channels
        self.cv3 = fuse_conv_bn(self.cv3, _bn_slice(self.bn, 0, hidden))
        self.cv2 = fuse_conv_bn(self.cv2, _bn_slice(self.bn, hidden, 2 * hidden))
        self.bn = None


@register(wiring=in_out(repeats_at=2, spatial=same_size()))
class C3x(C3):
    """C3 whose bottlenecks use cross convolutions (1x3 then 3x1). ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def _blocks(self, n: int, shortcut: bool, g: int) -> nn.Module:
        return nn.Sequential(*(Bottleneck(self.c_, self.c_, shortcut, g, k=((1, 3), (3, 1)), e=1.0)
                               for _ in range(n)))


class TransformerLayer(nn.Module):
    """A transformer encoder layer without LayerNorms, over tokens ``(B, N, c) -> (B, N, c)``.

    ``x + attn(q(x), k(x), v(x))`` then ``x + fc2(fc1(x))`` (no activation between, as in YOLOv5).
    """

    def __init__(self, c: int, num_heads: int) -> None:
        super().__init__()
        self.q = nn.Linear(c, c, bias=False)
        self.k = nn.Linear(c, c, bias=False)
        self.v = nn.Linear(c, c, bias=False)
        self.ma = MultiheadAttention(c, num_heads)
        self.fc1 = nn.Linear(c, c, bias=False)
        self.fc2 = nn.Linear(c, c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ma(self.q(x), self.k(x), self.v(x)) + x
        return self.fc2(self.fc1(x)) + x


class TransformerBlock(nn.Module):
    """Optional 1x1 Conv to ``c2``, a learned linear position term, then ``num_layers`` transformer
    layers over the ``H*W`` tokens. ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, num_heads: int, num_layers: int) -> None:
        super().__init__()
        self.conv = Conv(c1, c2) if c1 != c2 else None
        self.linear = nn.Linear(c2, c2)
        self.tr = nn.Sequential(*(TransformerLayer(c2, num_heads) for _ in range(num_layers)))
        self.c2 = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        b, _, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C): the layers are batch-first
        tokens = self.tr(tokens + self.linear(tokens))
        return tokens.transpose(1, 2).reshape(b, self.c2, h, w)


@register(wiring=in_out(repeats_at=2, spatial=same_size()))
class C3TR(C3):
    """C3 whose inner path is one :class:`TransformerBlock` of ``n`` layers with 4 heads
    (``shortcut`` and ``g`` have no effect there). ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def _blocks(self, n: int, shortcut: bool, g: int) -> nn.Module:
        return TransformerBlock(self.c_, self.c_, 4, n)


@register(wiring=in_out(spatial=same_size()))
class SPP(nn.Module):
    """Spatial pyramid pooling (He et al. 2014): parallel stride-1 max-pools of sizes ``k``,
    concatenated with their input. ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=size, stride=1, padding=size // 2) for size in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x, *(pool(x) for pool in self.m)], 1))


def _focus_stride(args: list, strides: list[Stride]) -> float:
    return 2 * stride_arg(3)(args, strides)  # the space-to-depth halves the map, then the conv's own stride


@register(wiring=in_out(spatial=_focus_stride))
class Focus(nn.Module):
    """Space-to-depth (each 2x2 pixel block to 4x the channels) then a :class:`Conv` (YOLOv5 stem).
    ``(B, c1, H, W) -> (B, c2, H/(2s), W/(2s))`` for even ``H, W``."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True) -> None:
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channel blocks in YOLOv5's order: (row 0, col 0), (1, 0), (0, 1), (1, 1)
        return self.conv(torch.cat([x[..., dy::2, dx::2] for dx in (0, 1) for dy in (0, 1)], 1))
