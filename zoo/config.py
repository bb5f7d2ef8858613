"""Model configs: read YAML (or take a dict), pick the scale, check the top-level layout.

Row-level checks (module names, args, ``from`` indices) happen in :mod:`zoo.builder`, which knows
the rows' positions; every problem is a :class:`~zoo.errors.ConfigError` naming file and row.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from zoo.errors import ConfigError

__all__ = ["ModelSpec", "load_yaml", "resolve_spec"]

SECTIONS = ("backbone", "head")
# libyaml's safe loader when PyYAML was built with it (about 10x faster than the pure-Python one)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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

    def rows(self) -> list[tuple[str, int, list]]:
        """``(section, index_in_section, row)`` for every row, backbone first."""
        out = []
        for section in SECTIONS:
            for j, row in enumerate(self.cfg.get(section) or []):
                out.append((section, j, row))
        return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError("file not found; give a path to a model YAML (see `zoo list` for the shipped cfgs)", file=str(path))
    try:
        data = yaml.load(path.read_text(), Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML{where}: {problem}", file=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping with 'backbone' and 'head', got {type(data).__name__}", file=str(path))
    return data


def _scale_from_name(stem: str, scales: Mapping[str, Any]) -> str | None:
    """The file-name convention: ``yolov10n`` -> ``n``, ``rtdetr-l`` -> ``l`` (longest key wins)."""
    for key in sorted(scales, key=lambda k: -len(str(k))):
        key = str(key)
        if re.search(rf"(?<=[0-9\-_]){re.escape(key)}$", stem):
            return key
    return None


def resolve_spec(cfg: str | Path | Mapping[str, Any], scale: str | None = None, nc: int | None = None) -> ModelSpec:
    """Load ``cfg`` and choose the scale: explicit ``scale`` > file-name suffix > the only/first scale."""
    if isinstance(cfg, Mapping):
        data, source, base_dir = copy.deepcopy(dict(cfg)), str(cfg.get("yaml_file", "<dict>")), None
        name = Path(source).stem if source != "<dict>" else "model"
    else:
        path = Path(cfg)
        data, source, base_dir, name = load_yaml(path), str(path), path.resolve().parent, path.stem

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

    scales = data.get("scales")
    depth = float(data.get("depth_multiple", 1.0))
    width = float(data.get("width_multiple", 1.0))
    max_channels = int(data.get("max_channels", 1 << 30))
    chosen: str | None = None
    if scales:
        if not isinstance(scales, dict):
            raise ConfigError("'scales' must map a scale name to [depth, width, max_channels]", file=source)
        keys = [str(k) for k in scales]
        if scale is not None:
            if str(scale) not in keys:
                raise ConfigError(f"bad scale '{scale}': this config has scales {', '.join(keys)}", file=source)
            chosen = str(scale)
        else:
            chosen = _scale_from_name(name, scales) or keys[0]
        values = scales[chosen] if chosen in scales else scales[type(next(iter(scales)))(chosen)]
        if not (isinstance(values, (list, tuple)) and len(values) == 3 and all(isinstance(v, (int, float)) for v in values)):
            raise ConfigError(f"scale '{chosen}' must be [depth, width, max_channels], got {values!r}", file=source)
        depth, width, max_channels = float(values[0]), float(values[1]), int(values[2])
    elif scale is not None:
        raise ConfigError(f"bad scale '{scale}': this config defines no 'scales'", file=source)
    data["scale"] = chosen
    return ModelSpec(data, source, name, chosen, depth, width, max_channels, model_nc, base_dir)
