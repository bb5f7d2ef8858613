"""How the builder turns a YAML row's args into constructor args and knows the output channels.

Every registered module carries a :class:`Wiring` (given to ``@register(wiring=...)``), so the
builder itself never names a module class. The common patterns live here; a block with unusual
wiring passes its own function to :func:`custom`.

A wiring function receives a :class:`RowContext` and returns :class:`Wired`. ``Wired.out_channels``
may be ``None``: the builder then reads ``module.out_channels`` (an ``int`` or, for a module that
returns a list of feature maps, a ``list[int]``) and falls back to the input channels.

A wiring may also say where the row's output sits spatially (its ``spatial`` rule: the output's
stride relative to the input image, from the final args and the input rows' strides). When every
row of a model declares one, the builder knows the strides the heads need without running the
model; otherwise :class:`~zoo.model.Model` finds them with a trial forward pass.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch.nn as nn

# The activation a Conv built with act=True gets: SiLU, unless a config's top-level `activation:` says
# otherwise for its build (YOLOv6's ReLU). A context variable, not state on the class: two models built
# one after the other (or in two threads) never see each other's choice.
_DEFAULT_ACT: ContextVar[Callable[[], Any] | None] = ContextVar("zoo_default_activation", default=None)


@contextmanager
def default_activation(factory: Callable[[], Any]) -> Iterator[None]:
    """Within the block, ``Conv(..., act=True)`` builds its activation with ``factory()`` (the builder
    enters it for a config with an ``activation:``)."""
    token = _DEFAULT_ACT.set(factory)
    try:
        yield
    finally:
        _DEFAULT_ACT.reset(token)


def build_activation() -> Any:
    """A new default activation module for a conv being built now: the config's, else ``nn.SiLU()``."""
    factory = _DEFAULT_ACT.get()
    return factory() if factory is not None else nn.SiLU()


Channels = Any  # int, or list of Channels for multi-input rows / multi-output sources
Stride = Any  # float for a feature map, None for an output that is not one (a head's)
Spatial = Callable[[list, list[Stride]], Stride]  # (final args, input strides) -> output stride


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= ``x`` (the Ultralytics width rule)."""
    return int(math.ceil(x / divisor) * divisor)


@dataclass(frozen=True)
class RowContext:
    """What the builder knows when it wires one row."""

    c_in: Channels  # channels of the input: int, list[int] for a multi-output source, list for `from` lists
    args: list  # args with symbols (nc, None, ...) already resolved
    repeats: int  # repeats after depth scaling
    width: float = 1.0
    max_channels: int = 1 << 30
    nc: int | None = None
    scale: str | None = None  # the chosen compound scale ("n", "s", ...): Ultralytics' C3k2 / A2C2f rows read it
    settings: Mapping[str, Any] = field(default_factory=dict)  # the config's top-level scalars (reg_max, end2end, ...)
    earlier: tuple[type, ...] = ()  # the module classes of the rows before this one (heads that adapt to the body)

    def scale_width(self, c: int) -> int:
        """Width-scale an output channel count, as Ultralytics 8.4 scales every block's: a count that happens
        to equal ``nc`` is scaled too (older Ultralytics left it alone, so yolov8n at nc 64 got a 64-wide
        stem). Heads take their class count unscaled through their own wiring."""
        if not isinstance(c, int) or isinstance(c, bool):
            raise TypeError(f"expected an integer channel count, got {c!r}")
        return make_divisible(min(c, self.max_channels) * self.width, 8)

    def single_input(self) -> int:
        if not isinstance(self.c_in, int):
            raise ValueError(
                f"this module takes one single-output input, got channels {self.c_in}; "
                "pick one output of a multi-output row with an Index row"
            )
        return self.c_in


@dataclass
class Wired:
    args: list
    repeats: int = 1  # copies to stack in nn.Sequential; 1 when the module consumed the count
    out_channels: Channels | None = None
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Wiring:
    """A named wiring rule: ``fn(ctx) -> Wired`` plus a one-line description for ``zoo list``."""

    fn: Callable[[RowContext], Wired]
    describe: str
    spatial: Spatial | None = None  # None: unknown, the model finds out with a trial run

    def __call__(self, ctx: RowContext) -> Wired:
        return self.fn(ctx)


def single_stride(strides: list[Stride]) -> float:
    """The one input's stride, for spatial rules of single-input blocks."""
    if len(strides) != 1 or not isinstance(strides[0], (int, float)):
        raise ValueError(f"expects one feature-map input, got inputs at strides {strides}")
    return float(strides[0])


def checked_step(step: Any, what: str = "stride") -> int:
    """A stride factor from a row's args: a positive integer, or a ValueError naming it."""
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise ValueError(f"{what} must be a positive integer, got {step!r}")
    return step


def same_size() -> Spatial:
    """Output at the input's resolution (blocks with padded stride-1 convs)."""
    return lambda args, strides: single_stride(strides)


def stride_arg(index: int, default: int = 1) -> Spatial:
    """Output stride = input stride x ``args[index]`` (``default`` when the arg is not given)."""

    def spatial(args: list, strides: list[Stride]) -> float:
        step = checked_step(args[index] if len(args) > index else default, f"stride arg {index}")
        return single_stride(strides) * step

    return spatial


def fixed_stride(factor: int) -> Spatial:
    """Output stride = input stride x ``factor`` (stems with a built-in downsampling)."""
    return lambda args, strides: single_stride(strides) * factor


def pyramid(*factors: int) -> Spatial:
    """A row returning several maps (a whole backbone): input stride x each factor."""
    return lambda args, strides: [single_stride(strides) * f for f in factors]


def picked_output(args: list, strides: list[Stride]) -> Stride:
    """The stride of output ``args[0]`` of a multi-output input row (``Index``)."""
    if len(strides) != 1 or not isinstance(strides[0], list):
        raise LookupError("the input row has no per-output strides")
    return strides[0][args[0]]


def not_a_map() -> Spatial:
    """The output is not a feature map (detection / segmentation heads)."""
    return lambda args, strides: None


def _equal_strides(args: list, strides: list[Stride]) -> float:
    if args and args[0] not in (1, -3):  # channels of an NCHW map; other dims change the map's size
        raise LookupError("a concat along a spatial dim has no single output stride")
    if not strides or any(not isinstance(s, (int, float)) for s in strides) or len(set(strides)) != 1:
        raise ValueError(
            f"concatenates maps of different resolutions (strides {strides}); "
            "point 'from' at rows with the same stride or resample one of them first"
        )
    return float(strides[0])


def _upsampled(args: list, strides: list[Stride]) -> float:
    size, factor = (list(args) + [None, None])[:2]
    if size is not None or not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 0:
        raise LookupError("only a scale factor (no fixed size) has a known output stride")
    return single_stride(strides) / factor


def _pooled(args: list, strides: list[Stride]) -> float:
    """``nn.MaxPool2d(kernel_size, stride=None, ...)``: the pixel spacing grows by the stride, which
    defaults to the kernel size (the size change from kernel and padding is a border, not a stride)."""
    step = args[1] if len(args) > 1 and args[1] is not None else (args[0] if args else None)
    if isinstance(step, (list, tuple)):
        raise LookupError("a per-axis pooling stride has no single output stride")
    return single_stride(strides) * checked_step(step, "MaxPool2d stride")


def _transposed(args: list, strides: list[Stride]) -> float:
    """``nn.ConvTranspose2d(c1, c2, kernel_size, stride=1, ...)`` after wiring: spacing / stride."""
    step = args[3] if len(args) > 3 else 1
    if isinstance(step, (list, tuple)):
        raise LookupError("a per-axis stride has no single output stride")
    return single_stride(strides) / checked_step(step, "ConvTranspose2d stride")


def in_out(repeats_at: int | None = None, scale: bool = True, spatial: Spatial | None = None) -> Wiring:
    """``args[0]`` is the output channel count (width-scaled); the input channels are prepended.

    With ``repeats_at`` the row's repeat count is inserted at that index of the final args and the
    module is built once (it stacks its own blocks), as C2f/C3-style blocks do.
    """

    def wire(ctx: RowContext) -> Wired:
        if not ctx.args:
            raise ValueError("expects the output channel count as its first arg")
        c1 = ctx.single_input()
        c2 = ctx.scale_width(ctx.args[0]) if scale else ctx.args[0]
        args = [c1, c2, *ctx.args[1:]]
        repeats = ctx.repeats
        if repeats_at is not None:
            args.insert(repeats_at, repeats)
            repeats = 1
        return Wired(args, repeats, c2)

    rep = f", repeats -> arg {repeats_at}" if repeats_at is not None else ""
    return Wiring(wire, f"(c1, c2{'*width' if scale else ''}, ...){rep}", spatial)


def in_out_mid(repeats_at: int | None = None, spatial: Spatial | None = None) -> Wiring:
    """``args[0]`` is a hidden width and ``args[1]`` the output channels, neither scaled (HGNet)."""

    def wire(ctx: RowContext) -> Wired:
        c1 = ctx.single_input()
        if len(ctx.args) < 2:
            raise ValueError("expects [hidden_channels, out_channels, ...]")
        args = [c1, *ctx.args]
        repeats = ctx.repeats
        if repeats_at is not None:
            args.insert(repeats_at, repeats)
            repeats = 1
        return Wired(args, repeats, ctx.args[1])

    return Wiring(wire, "(c1, cm, c2, ...)", spatial)


def in_first(spatial: Spatial | None = None) -> Wiring:
    """Input channels prepended; output channels from ``module.out_channels``, else the input's
    (norms, AIFI, whole backbones that return a list of maps)."""

    def wire(ctx: RowContext) -> Wired:
        c1 = ctx.single_input()
        return Wired([c1, *ctx.args], ctx.repeats, None)

    return Wiring(wire, "(c1, ...)", spatial)


def passthrough(spatial: Spatial | None = None) -> Wiring:
    """Args as written; output channels from ``module.out_channels`` or else the input's."""

    def wire(ctx: RowContext) -> Wired:
        return Wired(list(ctx.args), ctx.repeats, None)

    return Wiring(wire, "(...) as written", spatial)


def concat() -> Wiring:
    def wire(ctx: RowContext) -> Wired:
        if not isinstance(ctx.c_in, list) or not all(isinstance(c, int) for c in ctx.c_in):
            raise ValueError(f"concatenates single-output rows; got channels {ctx.c_in}")
        return Wired(list(ctx.args), ctx.repeats, sum(ctx.c_in))

    return Wiring(wire, "(dim) -> sum of input channels", _equal_strides)


def multi_input(insert_at: int | None = None, spatial: Spatial | None = None) -> Wiring:
    """Heads: the list of input channels is appended to the args, or inserted at ``insert_at``."""

    def wire(ctx: RowContext) -> Wired:
        chs = ctx.c_in if isinstance(ctx.c_in, list) else [ctx.c_in]
        args = list(ctx.args)
        if insert_at is None:
            args.append(list(chs))
        else:
            args.insert(insert_at, list(chs))
        return Wired(args, ctx.repeats, None)

    where = "appended" if insert_at is None else f"inserted at {insert_at}"
    return Wiring(wire, f"(...) with input channel list {where}", spatial)


def custom(fn: Callable[[RowContext], Wired], describe: str, spatial: Spatial | None = None) -> Wiring:
    return Wiring(fn, describe, spatial)


# torch.nn classes used in YAMLs, resolved without registration (see Registry.get).
TORCH_WIRINGS: dict[str, Wiring] = {
    "BatchNorm2d": Wiring(lambda ctx: Wired([ctx.single_input()], ctx.repeats, ctx.single_input()), "(c1)",
                          same_size()),
    "Upsample": passthrough(_upsampled),
    "Identity": passthrough(same_size()),  # YOLOv9e's input row
    "ConvTranspose2d": in_out(spatial=_transposed),
    "MaxPool2d": passthrough(_pooled),  # YOLOv3-tiny's downsampling
    "ZeroPad2d": passthrough(same_size()),  # a border of zeros leaves the pixel spacing as it was
    "Conv2d": in_out(scale=False),
    "LayerNorm": in_first(),
}
