"""Ablation sweeps: expand a cfg into variants, build and measure each, optionally train, write a CSV.

Variants are the product of the chosen scales and every ``--set KEY=V1,V2,...`` list. ``KEY`` is a
dotted path into the YAML (values are parsed as YAML, so ``64``, ``0.5``, ``True``, ``nearest``)::

    nc, imgsz, <any top-level key>      top-level scalars (``imgsz`` is also the measuring size)
    backbone.I.FIELD[.J...]             row I of the backbone section
    head.I.FIELD[.J...]                 row I of the head section
    row.I.FIELD[.J...]                  row I counted over backbone + head (the index ``zoo info`` prints)
    scales.S.K                          entry K (0 depth, 1 width, 2 max_channels) of scale S

with ``FIELD`` one of ``from``, ``repeats``, ``module``, ``args`` (or 0-3) and ``J`` an index into
that list, e.g. ``head.3.args.0=64,128`` or ``backbone.2.repeats=1,3``. A value list containing a
comma inside brackets (``[1,2]``) is kept whole. Two variants that build the same model (equal
parameter shapes, name by name, at the same image size) are measured once: the second is reported
and recorded with ``duplicate_of``.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from zoo.config import SECTIONS, load_yaml, resolve_spec
from zoo.errors import ConfigError

__all__ = ["Override", "Variant", "parse_set", "apply_override", "expand_variants", "model_signature", "signature_hash",
           "CSV_COLUMNS", "read_csv", "write_csv"]

ROW_FIELDS = ("from", "repeats", "module", "args")
SWEEPABLE_NEW_KEYS = ("nc", "imgsz")  # top-level keys --set may add when the cfg lacks them

CSV_COLUMNS = ("variant", "scale", "overrides", "imgsz", "batch", "device", "layers", "params", "gflops",
               "gflops_deploy", "latency_ms", "latency_p90_ms", "images_per_s", "gflops_per_s",
               "ort_latency_ms", "ort_latency_p90_ms",  # with --format onnx: the exported graph on ONNX Runtime
               "metric_name", "metric", "train_time_s", "duplicate_of", "shape_hash", "train_dir")


@dataclass(frozen=True)
class Override:
    key: str  # the dotted path as written
    values: tuple[Any, ...]


@dataclass
class Variant:
    scale: str | None
    settings: tuple[tuple[str, Any], ...]  # (dotted key, value) in --set order
    cfg: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def name(self) -> str:
        parts = [self.scale] if self.scale else []
        parts += [f"{k}={_show(v)}" for k, v in self.settings]
        return " ".join(parts) or "base"

    @property
    def slug(self) -> str:
        """The name as a file-name-safe string (training runs, variant YAMLs)."""
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.name.replace(" ", "_"))


def _show(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _split_values(text: str) -> list[str]:
    """Split on commas that are not inside brackets/braces/quotes."""
    out, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur))
    return out


def parse_set(text: str, source: str = "--set") -> Override:
    """``KEY=V1,V2`` -> :class:`Override`; values are YAML scalars / flow lists."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise ConfigError(f"--set {text!r}: write KEY=V1,V2,... (e.g. nc=3,5 or head.3.args.0=64,128)", file=source)
    values = []
    for item in _split_values(raw):
        item = item.strip()
        if not item:
            raise ConfigError(f"--set {text!r}: empty value in the list", file=source)
        try:
            values.append(yaml.safe_load(item))
        except yaml.YAMLError:
            raise ConfigError(f"--set {text!r}: {item!r} is not a YAML value", file=source) from None
    return Override(key, tuple(values))


def _index(token: str, length: int, where: str, key: str, source: str) -> int:
    if not re.fullmatch(r"-?\d+", token):
        raise ConfigError(f"--set {key}: '{token}' after {where} must be an index 0..{length - 1}", file=source)
    i = int(token)
    if not -length <= i < length:
        raise ConfigError(f"--set {key}: index {i} is out of range for {where} (length {length}); "
                          f"use 0..{length - 1}", file=source)
    return i


def _row_path(cfg: dict[str, Any], parts: list[str], key: str, source: str) -> tuple[list, int | str]:
    """Resolve ``section.I...`` / ``row.I...`` to (container, index) of the leaf."""
    head, *rest = parts
    if head == "row":
        rows = [r for s in SECTIONS for r in (cfg.get(s) or [])]
        where = "'row' (backbone + head)"
    else:
        rows = cfg.get(head) or []
        where = f"'{head}'"
    if len(rest) < 2:
        raise ConfigError(f"--set {key}: a row path is {head}.I.FIELD[.J], FIELD one of {', '.join(ROW_FIELDS)} "
                          f"(e.g. {head}.0.args.0)", file=source)
    row = rows[_index(rest[0], len(rows), where, key, source)]
    fld = rest[1]
    if fld in ROW_FIELDS:
        f_index = ROW_FIELDS.index(fld)
    elif re.fullmatch(r"\d", fld) and int(fld) < 4:
        f_index = int(fld)
    else:
        raise ConfigError(f"--set {key}: unknown row field '{fld}'; use one of {', '.join(ROW_FIELDS)}", file=source)
    container: Any = row
    index: Any = f_index
    for token in rest[2:]:
        value = container[index]
        if not isinstance(value, list):
            raise ConfigError(f"--set {key}: '{token}' indexes into {value!r}, which is not a list", file=source)
        container, index = value, _index(token, len(value), f"{value!r}", key, source)
    return container, index


def apply_override(cfg: dict[str, Any], key: str, value: Any, source: str = "<cfg>") -> None:
    """Set the dotted ``key`` of ``cfg`` (in place) to ``value``; see the module docstring for paths."""
    parts = key.split(".")
    if parts[0] in SECTIONS or parts[0] == "row":
        container, index = _row_path(cfg, parts, key, source)
    elif parts[0] == "scales" and len(parts) == 3:
        scales = cfg.get("scales") or {}
        if parts[1] not in scales:
            have = ", ".join(map(str, scales)) or "none"
            raise ConfigError(f"--set {key}: no scale '{parts[1]}'; this cfg has {have}", file=source)
        container, index = scales[parts[1]], _index(parts[2], len(scales[parts[1]]), f"scale {parts[1]}", key, source)
    elif len(parts) == 1:
        if key not in cfg and key not in SWEEPABLE_NEW_KEYS:
            scalars = [k for k, v in cfg.items() if not isinstance(v, (list, dict))]
            raise ConfigError(f"--set {key}: the cfg has no top-level '{key}'; settable keys: "
                              f"{', '.join(sorted(set(scalars) | set(SWEEPABLE_NEW_KEYS)))}, or a row path such as "
                              f"backbone.0.args.0 / head.1.repeats", file=source)
        if isinstance(cfg.get(key), (list, dict)):
            raise ConfigError(f"--set {key}: '{key}' is a {type(cfg[key]).__name__}; address one value inside it "
                              f"(e.g. {key}.0.args.0)", file=source)
        container, index = cfg, key
    else:
        raise ConfigError(f"--set {key}: unknown path; use a top-level key (nc, imgsz), backbone.I.FIELD[.J], "
                          f"head.I.FIELD[.J], row.I.FIELD[.J] or scales.S.K", file=source)
    container[index] = copy.deepcopy(value)


def expand_variants(cfg_path: str | Path, scales: Iterable[str] | None, overrides: Iterable[Override]) -> list[Variant]:
    """Every (scale, override values) combination, with its modified cfg dict. Checks every path and scale."""
    source = str(cfg_path)
    base = load_yaml(cfg_path)
    base["yaml_file"] = source  # errors and model names point at the user's file
    overrides = list(overrides)
    keys = [o.key for o in overrides]
    if len(set(keys)) != len(keys):
        twice = ", ".join(sorted({k for k in keys if keys.count(k) > 1}))
        raise ConfigError(f"--set names the same key twice ({twice}); give all its values in one --set KEY=V1,V2",
                          file=source)
    available = [str(k) for k in (base.get("scales") or {})]
    chosen: list[str | None] = list(scales) if scales else [None]
    for s in chosen:
        if s is not None and s not in available:
            hint = (f"this cfg has scales {', '.join(available)}" if available
                    else "this cfg defines no 'scales'; drop --scales")
            raise ConfigError(f"bad scale '{s}' in --scales: {hint}", file=source)
    variants = []
    for scale in chosen:
        for combo in itertools.product(*(o.values for o in overrides)):
            cfg = copy.deepcopy(base)
            for o, value in zip(overrides, combo):
                apply_override(cfg, o.key, value, source)
            spec = resolve_spec(cfg, scale=scale)  # a bad scale entry after --set fails here, before any build
            variants.append(Variant(spec.scale, tuple(zip(keys, combo)), cfg))
    return variants


def model_signature(model: Any, imgsz: tuple[int, int]) -> tuple:
    """What makes two built variants the same model: every state-dict entry's name and shape, and
    the image size they run at (so equal parameter counts with different layouts still differ)."""
    shapes = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
    return (tuple(imgsz), sum(p.numel() for p in model.parameters()), shapes)


def signature_hash(signature: tuple) -> str:
    """A short stable digest of :func:`model_signature` (stored in the CSV so resumed sweeps still
    recognise duplicates of variants measured before the interruption)."""
    return hashlib.sha1(repr(signature).encode()).hexdigest()[:12]


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole CSV atomically, so an interrupt never leaves a half-written row."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in CSV_COLUMNS})
    os.replace(tmp, path)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
