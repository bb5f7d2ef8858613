"""Build-size limits: a model past ``max_params`` is refused with one ConfigError before it is allocated.

A config can ask for any size (width x1e6, repeats 1e9, nc 1e9); unchecked, the build runs for
minutes and takes GBs before anything complains. :func:`zoo.builder.parse_model` builds each row
under a :class:`_Budget` that

* counts every parameter and buffer as a constructor registers it (torch's global registration
  hooks, active only for this build's thread), before it is initialised, so its memory is untouched;
* sizes a row of stacked copies from its first copy, and a block that stacks its own repeats from
  builds with 1 and 2 repeats, before building the rest;
* estimates each row's output at 640x640 from its channels and declared stride, so ``zoo info``
  never runs a forward pass that would need GBs.

A model past 1/8 of the limit is sized whole on the meta device before the real build goes on (see
``parse_model``). The limit is scoped with :func:`build_limits` (a context variable), which the CLI's
``--max-params`` and ``Model(max_params=...)`` set.
"""
from __future__ import annotations

import contextlib
import dataclasses
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Iterator

import torch.nn as nn
from torch.nn.modules import module as _nn_module

from zoo.errors import ConfigError

if TYPE_CHECKING:
    from zoo.registry import Entry
    from zoo.wiring import RowContext

__all__ = ["DEFAULT_MAX_PARAMS", "build_limits"]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# 1e9 parameters is 4 GB of float32 weights (twice that with gradients): above the largest vision
# models built from configs (SAM ViT-H: 0.64e9; the largest shipped cfg, rtdetr-x: 0.067e9), yet still
# buildable on an ordinary workstation
DEFAULT_MAX_PARAMS = 1_000_000_000
# modules one row may create (each costs 1-2 KB of Python objects); rtdetr-x has 872 in all
MAX_ROW_MODULES = 100_000
# a block that stacks its own repeats (C2f-style) with more than this many is first built with 1 and 2
# to extrapolate its size; shipped cfgs repeat at most 6 times, so they never pay for it
PROBE_REPEATS = 32
ESTIMATE_IMGSZ = 640  # image size at which a row's output size is estimated (zoo info's default)
SMALLER = "make it smaller (repeats, depth or width multiple, channels, nc)"

_MAX_PARAMS: ContextVar[int] = ContextVar("zoo_max_params", default=DEFAULT_MAX_PARAMS)
_ACTIVE: ContextVar["_Budget | None"] = ContextVar("zoo_build_budget", default=None)


@contextlib.contextmanager
def build_limits(max_params: int | None = None) -> Iterator[int]:
    """Builds inside this block (in this thread / task) refuse a model with more than ``max_params``
    parameters, or a row whose output at 640x640 holds more values than that, with a ConfigError,
    before allocating it. ``None`` keeps the limit in force (default ``DEFAULT_MAX_PARAMS``)."""
    if max_params is None:
        yield _MAX_PARAMS.get()
        return
    if not _is_int(max_params) or max_params < 1:
        raise ConfigError(f"max_params must be a positive integer, got {max_params!r}")
    token = _MAX_PARAMS.set(max_params)
    try:
        yield max_params
    finally:
        _MAX_PARAMS.reset(token)


# Both are raised from registration hooks inside a module's constructor; BaseException so that a
# constructor's own ``except Exception`` cannot swallow them
class _OverBudget(BaseException):
    """A tensor took the model past the limit."""


class _Recheck(BaseException):
    """The model is big (past 1/8 of the limit) or an allocation failed: size it on the meta device."""


def _count(n: int) -> str:
    """``1,234,567``; past 15 digits ``6.55e+21``, so an absurd width still prints as one short line."""
    if n < 10**15:
        return f"{n:,}"
    return f"{float(n):.3g}" if n < 10**300 else f"1e{int(n.bit_length() * 0.30103)}"


def _size(module: nn.Module) -> tuple[int, int]:
    return sum(p.numel() for p in module.parameters()), sum(1 for _ in module.modules())


def _output_values(channels: Any, stride: Any, imgsz: int) -> int:
    """Values in a row's output at ``imgsz`` x ``imgsz`` from its channels and stride(s); 0 if unknown."""
    if isinstance(channels, list) and isinstance(stride, list) and len(channels) == len(stride):
        return sum(_output_values(c, s, imgsz) for c, s in zip(channels, stride))
    if _is_int(channels) and isinstance(stride, (int, float)) and not isinstance(stride, bool) and 0 < stride < 1e9:
        side = -(-imgsz // stride)  # ceil: a strided conv keeps a partial window
        return channels * int(side) ** 2
    return 0


class _Budget:
    """One build's running size. Registered as torch's global parameter/buffer registration hook while
    rows are built, so a tensor is counted when a constructor assigns it, before it is initialised:
    an empty tensor past the limit is refused while its memory is untouched."""

    def __init__(self, limit: int, imgsz: int, recheck_at: int | None = None):
        self.limit, self.imgsz, self.recheck_at = limit, imgsz, recheck_at
        self.used = 0  # parameters of the rows built so far
        self.row = 0  # values registered by the row being built
        self.refused = False  # a limit error was raised (the meta sizing pass re-raises only those)

    def __call__(self, module: nn.Module, name: str, tensor: Any) -> None:
        if tensor is not None and _ACTIVE.get() is self:  # other threads' builds are not ours
            self.row += tensor.numel()
            if self.used + self.row > self.limit:
                raise _OverBudget(self.used + self.row)
            if self.recheck_at is not None and self.used + self.row > self.recheck_at:
                raise _Recheck

    @contextlib.contextmanager
    def active(self) -> Iterator["_Budget"]:
        token = _ACTIVE.set(self)
        hooks = [_nn_module.register_module_parameter_registration_hook(self),
                 _nn_module.register_module_buffer_registration_hook(self)]
        try:
            yield self
        finally:
            for hook in hooks:
                hook.remove()
            _ACTIVE.reset(token)

    def recheck(self) -> None:
        if self.recheck_at is not None:
            raise _Recheck

    def refuse(self, what: str) -> ConfigError:
        self.refused = True
        return ConfigError(f"{what}, over the limit of {_count(self.limit)}; {SMALLER} or raise the limit with "
                           "--max-params N (Python: max_params=N)")

    def check_output(self, name: str, channels: Any, stride: Any) -> None:
        values = _output_values(channels, stride, self.imgsz)
        if values > self.limit:
            raise self.refuse(f"{name}: its output at {self.imgsz}x{self.imgsz} would hold {_count(values)} values"
                              + (f" ({_count(channels)} channels at stride {stride:g})" if _is_int(channels) else ""))

    def check_total(self, name: str, repeats: int, params: int, modules: int, per_copy: int) -> None:
        if self.used + params > self.limit:
            raise self.refuse(f"{name} x{_count(repeats)} would have about {_count(params)} parameters "
                              f"({_count(per_copy)} per repeat)")
        if modules > MAX_ROW_MODULES:
            self.refused = True
            raise ConfigError(f"{name} x{_count(repeats)} would create about {_count(modules)} modules, over the "
                              f"limit of {MAX_ROW_MODULES:,} per row; lower its repeats or the depth multiple")

    def build(self, entry: Entry, ctx: RowContext, wired: Any, name: str) -> list[nn.Module]:
        """The row's module copies, refusing (before building them all) a row that would pass the limit."""
        self.row = 0
        try:
            if wired.repeats == 1 and ctx.repeats > PROBE_REPEATS:
                self._probe(entry, ctx, name)
            built = [entry.cls(*wired.args, **wired.kwargs)]
            if wired.repeats > 1:  # stacked copies: one copy tells the size of all of them
                params, modules = _size(built[0])
                self.check_total(name, wired.repeats, params * wired.repeats, modules * wired.repeats, params)
                built += [entry.cls(*wired.args, **wired.kwargs) for _ in range(wired.repeats - 1)]
        except _OverBudget as exc:
            raise self.refuse(f"{name}: with this row the model would have over {_count(exc.args[0])} "
                              "parameters") from None
        return built

    def _probe(self, entry: Entry, ctx: RowContext, name: str) -> None:
        """A block that builds ``ctx.repeats`` inner copies itself: sized from builds with 1 and 2."""
        try:
            sizes = [_size(entry.cls(*w.args, **w.kwargs))
                     for w in (entry.wiring(dataclasses.replace(ctx, repeats=k)) for k in (1, 2))]
        except Exception:  # the real build reports what is wrong with the args
            return
        finally:
            self.row = 0
        (p1, m1), (p2, m2) = sizes
        n, per_copy = ctx.repeats, max(p2 - p1, 0)
        self.check_total(name, n, p1 + (n - 1) * per_copy, m1 + (n - 1) * max(m2 - m1, 0), per_copy)

    def finish_row(self, params: int) -> None:
        self.used += params
        self.row = 0
