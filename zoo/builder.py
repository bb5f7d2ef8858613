"""``parse_model``: turn a config's rows into modules plus one :class:`RowRecord` per row.

The builder names no module class: each row's module comes from the registry together with its
:class:`~zoo.wiring.Wiring`, which says how args and channels are filled in. Every problem with
a row becomes a :class:`~zoo.errors.ConfigError` carrying the file, the row index and the fix.
"""
from __future__ import annotations

import inspect
import re
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import yaml

from zoo.config import ModelSpec
from zoo.errors import ConfigError
from zoo.limits import (  # noqa: F401  (build_limits and DEFAULT_MAX_PARAMS: re-exported)
    _MAX_PARAMS, DEFAULT_MAX_PARAMS, ESTIMATE_IMGSZ, SMALLER, _Budget, _count, _Recheck, build_limits,
)
from zoo.registry import MODULES, Entry, load_entry_point_plugins, load_plugins
from zoo.wiring import Channels, RowContext, default_activation

__all__ = ["RowRecord", "Graph", "parse_model", "head_task", "load_config_plugins", "build_limits", "DEFAULT_MAX_PARAMS"]


@dataclass(frozen=True)
class RowRecord:
    """What one YAML row became. The summary prints from these; the forward loop reads ``source``."""

    index: int
    from_: int | tuple[int, ...]  # the row's `from`: -1 = previous row (or the input for row 0)
    repeats: int  # after depth scaling (1 when the module consumed the count itself)
    module: str  # YAML module name
    args: tuple  # final constructor args
    out_channels: Channels
    params: int
    section: str  # "backbone" or "head"
    keywords: tuple[str, ...] = ()  # forward() keyword inputs this row accepts (e.g. prompts)

    @property
    def inputs(self) -> tuple[int, ...]:
        return self.from_ if isinstance(self.from_, tuple) else (self.from_,)


@dataclass
class Graph:
    modules: list[nn.Module]
    records: list[RowRecord]
    saved_rows: frozenset[int]  # rows whose outputs later rows read
    # each row's output stride (float; None for a non-map output), when every row declares its
    # wiring's spatial rule; None when some row does not, and a trial run has to find them
    strides: list[Any] | None = None


def _row_stride(entry: Entry, args: list, in_strides: list[Any], copies: int) -> Any:
    """The row's output stride from its wiring's spatial rule, applied once per stacked copy.
    Raises LookupError when the rule is missing or cannot tell for these args."""
    spatial = entry.wiring.spatial
    if spatial is None:
        raise LookupError(f"{entry.name} declares no spatial rule")
    stride = spatial(args, in_strides)
    for _ in range(copies - 1):
        previous, stride = stride, spatial(args, [stride])
        if stride == previous:  # same-size blocks (or an overflowed inf): 1e9 copies need not be walked
            break
    return stride


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _symbols(spec: ModelSpec) -> dict[str, Any]:
    """Names an arg string may use: the YAML's own top-level scalars plus nc/None/True/False."""
    table: dict[str, Any] = {k: v for k, v in spec.cfg.items() if isinstance(v, (int, float, str, bool))}
    table.update({"nc": spec.nc, "None": None, "True": True, "False": False})
    return table


def _resolve(value: Any, symbols: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return symbols.get(value, value)
    if isinstance(value, list):
        return [_resolve(v, symbols) for v in value]
    return value


def _signature(entry: Entry) -> str:
    return entry.signature()


def _forward_keywords(module: nn.Module) -> tuple[str, ...]:
    try:
        params = list(inspect.signature(module.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return ()
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in params if p.kind in kinds)


def _check_row(row: Any, index: int) -> tuple[int | list[int], int, str, list]:
    if not isinstance(row, (list, tuple)) or len(row) != 4:
        raise ConfigError(f"a row must be [from, repeats, module, args], got {row!r}")
    source, repeats, module, args = row
    if args is None:
        args = []
    if _is_int(source):
        sources = [source]
    elif isinstance(source, list) and source and all(_is_int(s) for s in source):
        sources = source
    else:
        raise ConfigError(f"'from' must be an integer or a non-empty list of integers, got {source!r}")
    for s in sources:
        if s >= index:
            raise ConfigError(f"'from' {s} points forward (to row {s}); a row can only read earlier rows 0..{index - 1} or -k")
        if s < 0 and index + s < 0 and not (s == -1 and index == 0):
            raise ConfigError(f"'from' {s} is out of range: row {index} has only {index} earlier rows")
    if not _is_int(repeats) or repeats < 1:
        raise ConfigError(f"'repeats' must be a positive integer, got {repeats!r}")
    if not isinstance(module, str):
        raise ConfigError(f"'module' must be a name (string), got {module!r}")
    if not isinstance(args, list):
        raise ConfigError(f"'args' must be a list, got {args!r}")
    return source, repeats, module, args


def _scaled_repeats(repeats: int, depth: float) -> int:
    """A row's repeat count after the depth multiple (at least 1)."""
    if repeats <= 1:
        return repeats
    try:
        return max(round(repeats * depth), 1)
    except OverflowError:
        raise ConfigError(f"'repeats' {_count(repeats)} x depth multiple {depth:g} is too large; "
                          "lower either") from None


def load_config_plugins(spec: ModelSpec, plugins: tuple[str, ...] = ()) -> None:
    """Import what a config needs before its rows can be looked up: installed entry points, the
    caller's ``plugins`` and the config's own ``plugins:`` (relative to its folder)."""
    load_entry_point_plugins()
    yaml_plugins = spec.cfg.get("plugins") or []
    if not isinstance(yaml_plugins, list) or not all(isinstance(p, str) for p in yaml_plugins):
        raise ConfigError("'plugins' must be a list of .py files or module names", file=spec.source)
    try:
        load_plugins(list(plugins) + yaml_plugins, base_dir=spec.base_dir)
    except ConfigError as exc:
        raise exc.at(file=spec.source) from None


def head_task(spec: ModelSpec, plugins: tuple[str, ...] = ()) -> str:
    """The task the config's last row declares (``task`` on its class), found without building."""
    load_config_plugins(spec, plugins)
    rows = spec.rows()
    section, _, row = rows[-1]
    name = row[2] if isinstance(row, list) and len(row) == 4 and isinstance(row[2], str) else None
    if name is None:
        raise ConfigError("a row must be [from, repeats, module, args]", file=spec.source, row=len(rows) - 1,
                          section=section)
    try:
        return str(getattr(MODULES.get(name).cls, "task", "features"))
    except ConfigError as exc:
        raise exc.at(file=spec.source, row=len(rows) - 1, section=section) from None


def parse_model(spec: ModelSpec, ch: int = 3, plugins: tuple[str, ...] = ()) -> Graph:
    """Build every row of ``spec``. ``ch`` is the number of input image channels."""
    load_config_plugins(spec, plugins)

    limit = _MAX_PARAMS.get()
    imgsz = spec.cfg.get("imgsz")
    imgsz = imgsz if _is_int(imgsz) and imgsz > 0 else ESTIMATE_IMGSZ
    rng = torch.random.get_rng_state()
    try:  # the usual case: the model is well inside the limit and is built once
        return _build_rows(spec, ch, _Budget(limit, imgsz, recheck_at=limit // 8))
    except _Recheck:
        pass
    # Past 1/8 of the limit (or an allocation failed): size the whole model on the meta device, where
    # tensors have no storage, so one that passes the limit is refused having allocated at most 1/8 of it
    sizing = _Budget(limit, imgsz)
    try:
        with torch.device("meta"):
            _build_rows(spec, ch, sizing)
    except ConfigError:
        if sizing.refused:
            raise
        # anything else (a block that cannot be built on meta): the real build below has its say
    torch.random.set_rng_state(rng)  # the same weights as a build without this detour
    return _build_rows(spec, ch, _Budget(limit, imgsz))


def _refused_head(spec: ModelSpec) -> None:
    """A config whose head zoo refuses (an Ultralytics segment/pose/OBB head, ...) fails on that row
    first, before an earlier row's own refusal or a long build could say something less to the point."""
    rows = spec.rows()
    section, _, row = rows[-1]
    if isinstance(row, list) and len(row) == 4 and isinstance(row[2], str):
        reason = MODULES.refusal(row[2])
        if reason is not None:
            raise ConfigError(f"{row[2]}: {reason}", file=spec.source, row=len(rows) - 1, section=section)


_ACTIVATION = re.compile(r"^(?:torch\.)?nn\.([A-Za-z][A-Za-z0-9_]*)\((.*)\)$")


def _activation(spec: ModelSpec) -> Any:
    """The config's ``activation:`` (Ultralytics' ``torch.nn.ReLU()`` form) as a factory, read without
    evaluating the text: a torch.nn activation class name and literal arguments. None when absent."""
    text = spec.cfg.get("activation")
    if text is None:
        return None
    hint = "write a torch.nn activation like nn.ReLU(), nn.SiLU() or nn.LeakyReLU(0.1)"
    match = _ACTIVATION.match(str(text).strip()) if isinstance(text, str) else None
    cls = getattr(nn, match.group(1), None) if match else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == "torch.nn.modules.activation"):
        raise ConfigError(f"'activation' {text!r} is not a torch.nn activation; {hint}", file=spec.source)
    try:
        # the arguments as a YAML flow sequence: numbers, booleans and strings, nothing callable
        args = tuple(yaml.safe_load(f"[{match.group(2)}]") or ()) if match.group(2).strip() else ()
        cls(*args)
    except Exception:
        raise ConfigError(f"'activation' {text!r}: its arguments must be literal values {cls.__name__} accepts; "
                          f"{hint}", file=spec.source) from None
    return lambda: cls(*args)


def _build_rows(spec: ModelSpec, ch: int, budget: "_Budget") -> Graph:
    _refused_head(spec)
    act = _activation(spec)
    with default_activation(act) if act is not None else nullcontext():
        return _build_all_rows(spec, ch, budget)


def _build_all_rows(spec: ModelSpec, ch: int, budget: "_Budget") -> Graph:
    symbols = _symbols(spec)
    channels: list[Channels] = []  # out channels per row
    modules: list[nn.Module] = []
    classes: list[type] = []  # each built row's registered class
    records: list[RowRecord] = []
    save: set[int] = set()
    strides: list[Any] | None = []

    with budget.active():
        for i, (section, _, row) in enumerate(spec.rows()):
            try:
                source, repeats, name, raw_args = _check_row(row, i)
                entry = MODULES.get(name)
                n = _scaled_repeats(repeats, spec.depth)
                sources = source if isinstance(source, list) else [source]
                resolved = [(ch if (s == -1 and i == 0) else channels[s]) for s in sources]
                c_in = resolved if isinstance(source, list) else resolved[0]
                ctx = RowContext(c_in, _resolve(raw_args, symbols), n, spec.width, spec.max_channels, spec.nc,
                                 spec.scale, symbols, tuple(classes))
                try:
                    wired = entry.wiring(ctx)
                except (ValueError, TypeError, IndexError, OverflowError) as exc:
                    raise ConfigError(f"{name}: {exc}; signature {_signature(entry)}") from None
                try:
                    inspect.signature(entry.cls).bind(*wired.args, **wired.kwargs)
                except TypeError as exc:
                    raise ConfigError(
                        f"{name} got args {wired.args} ({exc}); signature {_signature(entry)}"
                    ) from None
                except ValueError:
                    pass  # no introspectable signature: let the constructor decide
                stride: Any = None  # the output's stride (or the exception its rule raised), before building
                if strides is not None:
                    in_strides = [1.0 if (s == -1 and i == 0) else strides[s] for s in sources]
                    try:
                        stride = _row_stride(entry, wired.args, in_strides, wired.repeats)
                    except Exception as exc:  # raised below, after the constructor had its say, as before
                        stride = exc
                    else:
                        budget.check_output(name, wired.out_channels, stride)
                try:
                    built = budget.build(entry, ctx, wired, name)
                except ConfigError:
                    raise
                except Exception as exc:  # a constructor rejecting its args is a config problem
                    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
                        budget.recheck()  # sizes the model exactly, on the meta device
                        raise ConfigError(f"{name}: needs more memory than this machine can allocate "
                                          f"({type(exc).__name__}); {SMALLER}") from None
                    raise ConfigError(
                        f"{name}{tuple(wired.args)} failed: {type(exc).__name__}: {exc}; signature {_signature(entry)}"
                    ) from None
                if strides is not None:
                    if isinstance(stride, LookupError):
                        strides = None
                    elif isinstance(stride, ValueError):
                        rows = [i - 1 if s == -1 else s % i for s in sources]
                        raise ConfigError(f"{name} (input rows {rows}): {stride}") from None
                    elif isinstance(stride, Exception):
                        raise stride
                    else:
                        strides.append(stride)
                out = wired.out_channels
                if out is None:
                    declared = getattr(built[-1], "out_channels", None)
                    out = declared if declared is not None else c_in
                    budget.check_output(name, out, stride)  # before a trial run or summary would allocate it
            except ConfigError as exc:
                raise exc.at(file=spec.source, row=i, section=section) from None

            module = built[0] if len(built) == 1 else nn.Sequential(*built)
            channels.append(out)
            save.update((s % i) for s in sources if s != -1)
            params = sum(p.numel() for p in module.parameters())
            budget.finish_row(params)
            rec_source = tuple(source) if isinstance(source, list) else source
            records.append(RowRecord(i, rec_source, n, name, tuple(wired.args), out, params, section, _forward_keywords(module)))
            modules.append(module)
            classes.append(entry.cls)
    return Graph(modules, records, frozenset(save), strides)
