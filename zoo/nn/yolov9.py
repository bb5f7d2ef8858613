"""YOLOv9 blocks (Wang et al., "YOLOv9: Learning What You Want to Learn Using Programmable Gradient
Information", arXiv:2402.13616): the GELAN layers and the CBLinear / CBFuse auxiliary branch of YOLOv9e.

Signatures, defaults and attribute names follow Ultralytics 8.4 so its YOLOv9 YAMLs build unchanged
and its checkpoints load strictly by state-dict key. Wiring follows Ultralytics' ``parse_model``:
RepNCSPELAN4, ELAN1, ADown, AConv and SPPELAN take ``(c1, c2*width, ...)`` without a repeat count
(RepNCSPELAN4's ``n`` is written in its args); CBLinear's output channels are a list, never scaled;
CBFuse reads CBLinear rows plus one plain map. Every BatchNorm comes from
:class:`~zoo.nn.common.Conv` and so uses Ultralytics' ``eps=1e-3, momentum=0.03``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.nn.common import Conv, autopad
from zoo.nn.rtdetr import RepConv
from zoo.nn.yolov5 import C3, Bottleneck
from zoo.registry import register
from zoo.wiring import (
    RowContext, Stride, Wired, checked_step, custom, fixed_stride, in_out, passthrough, same_size, single_stride,
    stride_arg,
)

__all__ = ["RepConvN", "RepBottleneck", "RepCSP", "RepNCSPELAN4", "ELAN1", "AConv", "ADown", "SPPELAN",
           "CBLinear", "CBFuse", "Silence"]


# RepConvN, RepBottleneck and RepCSP are not among the blocks Ultralytics' parse_model wires: a row naming
# one gets its args as written (c1 included, nothing scaled) there, and so it does here
@register(wiring=passthrough(stride_arg(3)))
class RepConvN(RepConv):
    """YOLOv9's RepConvN: a 3x3 + 1x1 conv pair (identity-BN branch only with ``bn=True``) that
    :meth:`fuse` folds into one 3x3 conv. ``(B, c1, H, W) -> (B, c2, H/s, W/s)``.

    The same layers and folding as RT-DETR's :class:`~zoo.nn.rtdetr.RepConv` (Ultralytics 8.4 itself
    builds YOLOv9's RepBottleneck from that RepConv); the name is YOLOv9's, for YAMLs that use it.
    """

    @property
    def out_channels(self) -> int:
        return self.c2


@register(wiring=passthrough(same_size()))
class RepBottleneck(Bottleneck):
    """A :class:`~zoo.nn.yolov5.Bottleneck` whose first conv is a :class:`RepConvN` (so ``k[0]`` must be 3).
    ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1,
                 k: tuple[int, int] = (3, 3), e: float = 0.5) -> None:
        super().__init__(c1, c2, shortcut, g, k, e)
        # replaced in place: the attribute keeps its position, so state-dict keys stay in Ultralytics' order
        self.cv1 = RepConvN(c1, int(c2 * e), k[0], 1)
        self.out_channels = c2


@register(wiring=passthrough(same_size()))
class RepCSP(C3):
    """A :class:`~zoo.nn.yolov5.C3` of ``n`` :class:`RepBottleneck` blocks. ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def _blocks(self, n: int, shortcut: bool, g: int) -> nn.Module:
        return nn.Sequential(*(RepBottleneck(self.c_, self.c_, shortcut, g, e=1.0) for _ in range(n)))


@register(wiring=in_out(spatial=same_size()))
class RepNCSPELAN4(nn.Module):
    """GELAN block: a 1x1 conv to ``c3`` channels split in halves, two chained branches on the second
    half (each a :class:`RepCSP` of ``n`` blocks then a 3x3 conv, ``c4`` wide), all four maps
    concatenated and squeezed to ``c2``. ``(B, c1, H, W) -> (B, c2, H, W)``.

    The branches come from :meth:`_branch`, which :class:`ELAN1` replaces.
    """

    def __init__(self, c1: int, c2: int, c3: int, c4: int, n: int = 1) -> None:
        super().__init__()
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1, 1)
        # chunk(2) gives the second half c3 // 2 channels also when c3 is odd
        self.cv2 = self._branch(c3 // 2, c4, n)
        self.cv3 = self._branch(c4, c4, n)
        self.cv4 = Conv(c3 + 2 * c4, c2, 1, 1)

    def _branch(self, c_in: int, c_out: int, n: int) -> nn.Module:
        return nn.Sequential(RepCSP(c_in, c_out, n), Conv(c_out, c_out, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.append(self.cv2(y[-1]))
        y.append(self.cv3(y[-1]))
        return self.cv4(torch.cat(y, 1))


@register(wiring=in_out(spatial=same_size()))
class ELAN1(RepNCSPELAN4):
    """The light GELAN block of YOLOv9t/s: :class:`RepNCSPELAN4` with each branch a single 3x3 conv.
    ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int) -> None:
        super().__init__(c1, c2, c3, c4, n=1)

    def _branch(self, c_in: int, c_out: int, n: int) -> nn.Module:
        return Conv(c_in, c_out, 3, 1)


def _smooth_2x2(x: torch.Tensor) -> torch.Tensor:
    """The 2x2 / stride-1 average both downsamplers apply first: ``(B, C, H, W) -> (B, C, H-1, W-1)``."""
    return F.avg_pool2d(x, 2, 1, 0, False, True)


@register(wiring=in_out(spatial=fixed_stride(2)))
class AConv(nn.Module):
    """2x2 average (stride 1), then a 3x3 stride-2 conv. ``(B, c1, H, W) -> (B, c2, H/2, W/2)``."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv1(_smooth_2x2(x))


@register(wiring=in_out(spatial=fixed_stride(2)))
class ADown(nn.Module):
    """YOLOv9's downsampler: after a 2x2 average, one half of the channels goes through a 3x3 stride-2
    conv and the other through a 3x3 stride-2 max-pool and a 1x1 conv; the halves are concatenated.
    ``(B, c1, H, W) -> (B, c2, H/2, W/2)``; ``c1`` and ``c2`` must be even.
    """

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        if c1 % 2 or c2 % 2:
            raise ValueError(f"ADown splits its input and output channels in halves; needs even c1, c2 "
                             f"(got {c1}, {c2})")
        self.c = c2 // 2
        self.cv1 = Conv(c1 // 2, self.c, 3, 2, 1)
        self.cv2 = Conv(c1 // 2, self.c, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = _smooth_2x2(x).chunk(2, 1)
        return torch.cat((self.cv1(x1), self.cv2(F.max_pool2d(x2, 3, 2, 1))), 1)


@register(wiring=in_out(spatial=same_size()))
class SPPELAN(nn.Module):
    """SPP-ELAN: a 1x1 conv to ``c3``, three chained ``k x k`` stride-1 max-pools, all four maps
    concatenated and squeezed to ``c2``. ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, c3: int, k: int = 5) -> None:
        super().__init__()
        self.c = c3
        self.cv1 = Conv(c1, c3, 1, 1)
        # three pools without parameters, kept as three attributes as in Ultralytics' module tree
        self.cv2 = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.cv3 = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.cv4 = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.cv5 = Conv(4 * c3, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for pool in (self.cv2, self.cv3, self.cv4):
            y.append(pool(y[-1]))
        return self.cv5(torch.cat(y, 1))


def _positive_ints(value: object) -> bool:
    return (isinstance(value, list) and len(value) > 0
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


def _wire_cblinear(ctx: RowContext) -> Wired:
    if not ctx.args or not _positive_ints(ctx.args[0]):
        raise ValueError("expects [[c2, ...], (k, s, p, g)]: a list of output channel counts first")
    if ctx.repeats != 1:
        raise ValueError(f"returns several maps, so copies cannot be stacked; set its repeats to 1 (got {ctx.repeats})")
    c2s = list(ctx.args[0])
    return Wired([ctx.single_input(), c2s, *ctx.args[1:]], 1, c2s)


def _cblinear_strides(args: list, strides: list[Stride]) -> list[float]:
    """One stride per output: the input's times the conv's stride ``args[3]``."""
    step = checked_step(args[3] if len(args) > 3 else 1, "CBLinear stride")
    return [single_stride(strides) * step] * len(args[1])


@register(wiring=custom(_wire_cblinear, "(c1, [c2, ...] as written, k, s, p, g) -> one map per c2",
                        _cblinear_strides))
class CBLinear(nn.Module):
    """One conv whose output is split into ``len(c2s)`` maps of ``c2s[i]`` channels (a multi-output row;
    :class:`CBFuse` rows read them). ``(B, c1, H, W) -> [(B, c2s[i], H/s, W/s), ...]``."""

    def __init__(self, c1: int, c2s: list[int], k: int = 1, s: int = 1, p: int | None = None, g: int = 1) -> None:
        super().__init__()
        self.c2s = list(c2s)
        self.conv = nn.Conv2d(c1, sum(self.c2s), k, s, autopad(k, p), groups=g, bias=True)
        self.out_channels = list(self.c2s)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.conv(x).split(self.c2s, dim=1))


def _wire_cbfuse(ctx: RowContext) -> Wired:
    if not ctx.args or not isinstance(ctx.args[0], list):
        raise ValueError("expects [[index, ...]]: which output of each CBLinear row to add")
    idx = ctx.args[0]
    inputs = ctx.c_in if isinstance(ctx.c_in, list) else [ctx.c_in]
    *sources, target = inputs
    if not sources or not isinstance(target, int) or not all(isinstance(s, list) for s in sources):
        raise ValueError(f"'from' must list multi-output (CBLinear) rows then one plain map; got channels {ctx.c_in}")
    if len(idx) != len(sources):
        raise ValueError(f"gives {len(idx)} output indices for {len(sources)} CBLinear rows; give one per row")
    if ctx.repeats != 1:
        raise ValueError(f"reads several rows, so copies cannot be stacked; set its repeats to 1 (got {ctx.repeats})")
    for k, (i, chans) in enumerate(zip(idx, sources)):
        if not isinstance(i, int) or isinstance(i, bool) or not -len(chans) <= i < len(chans):
            raise ValueError(f"index {i!r} for input {k} is out of range: that row has {len(chans)} outputs")
        if chans[i] != target:
            raise ValueError(f"output {i} of input {k} has {chans[i]} channels, the map it is added to has {target}; "
                             "pick outputs as wide as the last input")
    return Wired([list(idx)], 1, target)


def _cbfuse_stride(args: list, strides: list[Stride]) -> float:
    """The last input's stride: every picked map is resized to it."""
    return single_stride(strides[-1:])


@register(wiring=custom(_wire_cbfuse, "([index per CBLinear row]) -> channels of the last input", _cbfuse_stride))
class CBFuse(nn.Module):
    """Add output ``idx[i]`` of each CBLinear input (resized, nearest, to the last input's size) to the
    last input. ``[outs_0, ..., outs_k, (B, C, H, W)] -> (B, C, H, W)``."""

    def __init__(self, idx: list[int]) -> None:
        super().__init__()
        self.idx = idx

    def forward(self, xs: list) -> torch.Tensor:
        target = xs[-1]
        size = target.shape[2:]
        picked = [F.interpolate(outs[i], size=size, mode="nearest") for i, outs in zip(self.idx, xs[:-1])]
        return torch.stack(picked + [target]).sum(0)


@register(wiring=passthrough(same_size()))
class Silence(nn.Identity):
    """YOLOv9's no-op input row (older YOLOv9e YAMLs; Ultralytics 8.4 writes ``nn.Identity``)."""
