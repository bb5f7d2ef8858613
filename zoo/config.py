"""Model configs: read YAML (or take a dict), pick the scale, check the top-level layout.

Row-level checks (module names, args, ``from`` indices) happen in :mod:`zoo.builder`, which knows
the rows' positions; every problem is a :class:`~zoo.errors.ConfigError` naming file and row.
"""
from __future__ import annotations

import copy
import difflib
import fnmatch
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from zoo.errors import ConfigError

__all__ = ["ModelSpec", "load_yaml", "resolve_spec", "check_structure", "find_cfg", "shipped_cfgs", "list_models"]

CFG_DIR = Path(__file__).resolve().parent / "cfg"  # the shipped model YAMLs (package data)

SECTIONS = ("backbone", "head")
# libyaml's safe loader when PyYAML was built with it (about 10x faster than the pure-Python one)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Bounds on what a config may hold. The largest shipped cfg (rtdetr-x) has 303 values nested 4 deep,
# so real configs (even with a 20k-class 'names' list) are far inside them. Past them it is a YAML
# alias bomb: loading shares aliased values, so it is cheap, but every later step that walks or
# copies the config (args resolution, deepcopy, saving a checkpoint) expands them, for minutes and GBs.
MAX_VALUES = 100_000
# those later steps recurse once per level; libyaml's composer recurses in C and crashes the process
# (segfault) on ~50k levels, so deeply nested text is refused before it is composed
MAX_DEPTH = 64
MAX_FILE_BYTES = 8 << 20  # a model YAML is a few KB
MAX_IMGSZ = 16_384  # a cfg's 'imgsz' sizes the build's trial run when one is needed


def check_structure(data: Any, source: str) -> None:
    """Refuse a config whose values, with YAML aliases expanded, contain themselves (``&r [.., *r]``),
    nest deeper than ``MAX_DEPTH`` or number more than ``MAX_VALUES``: one ConfigError naming the key.

    A shared object's size is computed once (memoised by id), so an alias bomb costs as much to check
    as it took to load; the walk recurses at most ``MAX_DEPTH`` levels before it stops."""
    if not isinstance(data, Mapping):
        return
    sizes: dict[int, tuple[int, int]] = {}  # id -> (values when expanded, levels of nesting)
    open_ids = {id(data)}  # containers being counted: meeting one again is a cycle
    total = 1
    for key, value in data.items():
        try:
            count, depth = _expanded_size(value, sizes, open_ids, 1)
        except RecursionError:
            raise ConfigError(f"'{key}' contains itself through a YAML alias (a *name inside its own &name); "
                              "write the repeated part out instead", file=source) from None
        total += 1 + count
        if depth > MAX_DEPTH:
            raise ConfigError(f"'{key}' is nested more than {MAX_DEPTH} levels deep (a config needs 4); rows "
                              "are [from, repeats, module, args] with flat args", file=source)
        if total > MAX_VALUES:
            raise ConfigError(f"'{key}' expands to over {MAX_VALUES:,} values (YAML aliases repeat their "
                              "value each time: an alias bomb?); a model config has a few hundred", file=source)


_SCALARS = (str, int, float, bool, type(None))


def _expanded_size(node: Any, sizes: dict[int, tuple[int, int]], open_ids: set[int], level: int) -> tuple[int, int]:
    """``(values, nesting levels)`` of ``node``, a shared object counted at every place it appears.
    Stops early once a bound is passed (the caller reports it); RecursionError marks a cycle."""
    if isinstance(node, (list, tuple)):
        kids: Any = node
    elif isinstance(node, (dict, Mapping)):  # dict first: the ABC check is slow
        kids = [v for kv in node.items() for v in kv]
    else:
        return 1, 0
    known = sizes.get(id(node))
    if known is not None:
        return known
    if id(node) in open_ids:
        raise RecursionError(f"cycle through {type(node).__name__}")
    if level > MAX_DEPTH:
        return 1, 1
    open_ids.add(id(node))
    values, inner = 1, 0
    for kid in kids:
        if isinstance(kid, _SCALARS):
            values += 1
            continue
        count, depth = _expanded_size(kid, sizes, open_ids, level + 1)
        values += count
        inner = max(inner, depth)
        if values > MAX_VALUES or level + inner > MAX_DEPTH:
            break  # partial, but past a bound: the caller refuses the config
    open_ids.discard(id(node))
    sizes[id(node)] = result = (values, inner + 1)
    return result


@dataclass(frozen=True)
class ModelSpec:
    """A config with its scale chosen: everything the builder needs besides the input channels."""

    cfg: dict[str, Any]
    source: str  # file path, or "<dict>"
    name: str  # file stem, used in summaries
    scale: str | None
    depth: float
    width: float
    max_channels: int
    nc: int | None
    base_dir: Path | None  # folder of the YAML (plugins are looked up relative to it)

    @property
    def input_channels(self) -> int:
        """The config's ``channels:`` (Ultralytics writes it into the YAML its checkpoints carry), else 3."""
        channels = self.cfg.get("channels", 3)
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 64:
            raise ConfigError(f"'channels' (input image channels) must be an integer 1..64, got {channels!r}",
                              file=self.source)
        return channels

    def rows(self) -> list[tuple[str, int, list]]:
        """``(section, index_in_section, row)`` for every row, backbone first."""
        out = []
        for section in SECTIONS:
            for j, row in enumerate(self.cfg.get(section) or []):
                out.append((section, j, row))
        return out


def shipped_cfgs() -> list[Path]:
    """The model YAMLs shipped inside the package, sorted by name."""
    return sorted(CFG_DIR.glob("*.yaml"), key=lambda p: p.stem) if CFG_DIR.is_dir() else []


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the shipped cfgs (``yolov10n``, ``sam-tinyvit``, ...), each usable as ``Model(name)``;
    ``pattern`` keeps the names matching it (``fnmatch``: ``"yolov10*"``, ``"*-cls"``)."""
    names = [p.stem for p in shipped_cfgs()]
    return fnmatch.filter(names, pattern) if pattern else names


_SCALED_NAME = re.compile(r"^(?P<base>.*\d)(?P<scale>[nslmx])(?P<rest>-.+)?$")


def scaled_name(stem: str) -> tuple[str, str] | None:
    """Ultralytics' naming: ``yolov8n`` is ``yolov8.yaml`` at scale ``n``, ``yolo11s-cls`` is
    ``yolo11-cls.yaml`` at ``s``. Returns ``(base stem, scale)``, or None for a name without one."""
    match = _SCALED_NAME.match(stem)
    return (match["base"] + (match["rest"] or ""), match["scale"]) if match else None


def find_cfg(cfg: str | Path) -> Path:
    """The YAML file ``cfg`` names: an existing path wins; else a shipped cfg by name (``yolov10n``,
    ``yolov10n.yaml``, ``cfg/yolov10n.yaml`` from any folder); else a ConfigError suggesting close names.
    A path into another folder that does not exist is left to :func:`load_yaml` (file not found)."""
    path = Path(cfg)
    if path.exists():
        return path
    stem = path.stem if path.suffix in (".yaml", ".yml") else path.name
    unscaled = scaled_name(stem)
    if unscaled and path.suffix in (".yaml", ".yml") and path.with_name(unscaled[0] + path.suffix).exists():
        return path.with_name(unscaled[0] + path.suffix)  # a user's yolov8n.yaml next to their yolov8.yaml
    parent = path.parent.as_posix()
    if parent not in (".", "cfg") or path.suffix not in ("", ".yaml", ".yml"):
        return path
    shipped = {p.stem: p for p in shipped_cfgs()}
    if stem in shipped:
        return shipped[stem]
    if unscaled and unscaled[0] in shipped:
        return shipped[unscaled[0]]
    close = difflib.get_close_matches(stem, list(shipped), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(n) for n in close)}?" if close else ""
    raise ConfigError(f"unknown model {str(cfg)!r} (no such file, no shipped cfg of that name){hint} "
                      "(zoo list shows the shipped cfgs)")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = find_cfg(path)
    if not path.exists():
        raise ConfigError("file not found; give a path to a model YAML (see `zoo list` for the shipped cfgs)", file=str(path))
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"is {path.stat().st_size:,} bytes; a model YAML is a few KB (over "
                              f"{MAX_FILE_BYTES >> 20} MB is refused): is this the right file?", file=str(path))
        raw = path.read_bytes()
    except OSError as exc:  # a folder, no permission, ...
        raise ConfigError(f"cannot read it: {exc.strerror or exc}; give a path to a model YAML file", file=str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}): a model YAML is "
                          "UTF-8 text; re-save it as UTF-8, or check that this is the right file", file=str(path)) from None
    try:
        _check_nesting(text, str(path))
        data = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML{where}: {problem}", file=str(path)) from None
    except RecursionError:  # PyYAML's pure-Python composer, when it has no libyaml
        raise ConfigError(f"nested more than {MAX_DEPTH} levels deep (a config needs 4)", file=str(path)) from None
    except ConfigError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:  # a scalar its constructor rejects (13th month, 5,000-digit int)
        raise ConfigError(f"not valid YAML: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping with 'backbone' and 'head', got {type(data).__name__}", file=str(path))
    check_structure(data, str(path))
    return data


def _check_nesting(text: str, source: str) -> None:
    """Refuse YAML text nested deeper than ``MAX_DEPTH`` before libyaml composes it (see MAX_DEPTH).
    Each level takes a '[', '{', '-', ':' or '?', so text with few of them is passed without parsing."""
    if sum(text.count(c) for c in "[{-:?") < 2_000:
        return  # libyaml composes a couple of thousand levels safely; the loaded config is checked after
    depth = 0
    for event in yaml.parse(text, Loader=_SAFE_LOADER):  # events only: flat, nothing is composed
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(f"nested more than {MAX_DEPTH} levels deep (a config needs 4); rows are "
                                  "[from, repeats, module, args] with flat args", file=source)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


_FLOAT_MAX = 1.7976931348623157e308


def _is_number(x: Any) -> bool:
    """A real, finite number: not a bool, not a string, not nan or inf, not an int past float range."""
    if isinstance(x, float):
        return math.isfinite(x)
    return isinstance(x, int) and not isinstance(x, bool) and abs(x) <= _FLOAT_MAX


def _multiplier(value: Any, what: str, source: str) -> float:
    """A depth or width multiple: a finite number > 0 (repeats and channels are scaled by it)."""
    if not (_is_number(value) and value > 0):
        raise ConfigError(f"{what} must be a finite number > 0 (1.0 = as written), got {value!r}", file=source)
    return float(value)


def _channel_cap(value: Any, what: str, source: str) -> int:
    """``max_channels``: a positive whole number (1024.0 is taken as 1024)."""
    if not (_is_number(value) and value >= 1 and value == int(value)):
        raise ConfigError(f"{what} must be a positive integer channel count, got {value!r}", file=source)
    return int(value)


def _scale_from_name(stem: str, scales: Mapping[str, Any]) -> str | None:
    """The file-name convention: ``yolov10n`` -> ``n``, ``rtdetr-l`` -> ``l`` (longest key wins)."""
    for key in sorted(scales, key=lambda k: -len(str(k))):
        key = str(key)
        if re.search(rf"(?<=[0-9\-_]){re.escape(key)}$", stem):
            return key
    return None


def resolve_spec(cfg: str | Path | Mapping[str, Any], scale: str | None = None, nc: int | None = None) -> ModelSpec:
    """Load ``cfg`` and choose the scale: explicit ``scale`` > the config's own ``scale:`` key > file-name
    suffix > the only/first scale."""
    if isinstance(cfg, Mapping):
        source = str(cfg.get("yaml_file", "<dict>"))
        check_structure(cfg, source)  # before deepcopy, which would expand an alias bomb or loop on a cycle
        data, base_dir = copy.deepcopy(dict(cfg)), None
        name = Path(source).stem if source != "<dict>" else "model"
    else:
        path = find_cfg(cfg)  # a path, or a shipped cfg's name
        data, source, base_dir, name = load_yaml(path), str(path), path.resolve().parent, path.stem
        asked = Path(cfg).stem if Path(cfg).suffix in (".yaml", ".yml") else Path(cfg).name
        unscaled = scaled_name(asked)
        if asked != name and unscaled and unscaled[0] == name:  # yolov8n -> yolov8.yaml at scale n
            name = asked
            if scale is None and str(unscaled[1]) in [str(k) for k in data.get("scales") or {}]:
                scale = unscaled[1]

    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping", file=source)
    if "backbone" not in data:
        raise ConfigError("missing 'backbone': a model needs a 'backbone' list of [from, repeats, module, args] rows", file=source)
    for section in SECTIONS:
        rows = data.get(section)
        if rows is None and section == "head":
            continue
        if not isinstance(rows, list) or (section == "backbone" and not rows):
            raise ConfigError(f"'{section}' must be a non-empty list of [from, repeats, module, args] rows", file=source)

    if nc is not None:
        data["nc"] = nc
    model_nc = data.get("nc")
    if model_nc is not None and (not isinstance(model_nc, int) or isinstance(model_nc, bool) or model_nc < 1):
        raise ConfigError(f"'nc' must be a positive integer, got {model_nc!r}", file=source)

    imgsz = data.get("imgsz")
    if imgsz is not None and not (_is_number(imgsz) and imgsz == int(imgsz) and 1 <= imgsz <= MAX_IMGSZ):
        raise ConfigError(f"'imgsz' must be an image size in pixels (an integer 1..{MAX_IMGSZ}), got {imgsz!r}", file=source)

    scales = data.get("scales")
    chosen: str | None = None
    if scales:
        if not isinstance(scales, dict):
            raise ConfigError("'scales' must map a scale name to [depth, width, max_channels]", file=source)
        keys = [str(k) for k in scales]
        if scale is not None:
            if str(scale) not in keys:
                raise ConfigError(f"bad scale '{scale}': this config has scales {', '.join(keys)}", file=source)
            chosen = str(scale)
        elif str(data.get("scale")) in keys:  # the config says (Ultralytics' and zoo's checkpoints store it)
            chosen = str(data["scale"])
        else:
            chosen = _scale_from_name(name, scales) or keys[0]
        values = next(v for k, v in scales.items() if str(k) == chosen)
        if not (isinstance(values, (list, tuple)) and len(values) == 3):
            raise ConfigError(f"scale '{chosen}' must be [depth, width, max_channels], got {values!r}", file=source)
        where = f"scale '{chosen}' [depth, width, max_channels]: "
        depth = _multiplier(values[0], where + "depth", source)
        width = _multiplier(values[1], where + "width", source)
        max_channels = _channel_cap(values[2], where + "max_channels", source)
    elif scale is not None:
        raise ConfigError(f"bad scale '{scale}': this config defines no 'scales'", file=source)
    else:
        depth = _multiplier(data.get("depth_multiple", 1.0), "'depth_multiple'", source)
        width = _multiplier(data.get("width_multiple", 1.0), "'width_multiple'", source)
        max_channels = _channel_cap(data.get("max_channels", 1 << 30), "'max_channels'", source)
    data["scale"] = chosen
    return ModelSpec(data, source, name, chosen, depth, width, max_channels, model_nc, base_dir)
