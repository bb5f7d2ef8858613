"""Key maps from timm's state-dict layouts to zoo keys (``model.{row}.…``).

Covers ``tiny_vit_*`` (TinyViT, arXiv:2207.10666), ``mobilevit_*`` (MobileViT, arXiv:2110.02178)
and ``mobilevitv2_*`` (MobileViTv2, arXiv:2206.02680). Rows are found by module type in row
order, so a cfg may add rows (or drop the classifier) and the map still lines up.

TinyViT (see :mod:`zoo.nn.tiny_vit` for the table)::

    patch_embed.*            -> PatchEmbed row
    stages.0.blocks.*        -> ConvLayer row .blocks.*
    stages.{i}.downsample.*  -> i-th PatchMerging row (i = 1..3)
    stages.{i}.blocks.*      -> i-th BasicLayer row .blocks.*
    head.norm.* / head.fc.*  -> ClassifierHead row .norm.* / .fc.*

:func:`map_tinyvit_key` also reads MobileSAM's ``image_encoder.*`` layout (``layout="mobilesam"``)
for the SAM cfgs.

MobileViT v1/v2 (see :mod:`zoo.nn.mobilevit`)::

    stem.*                   -> the first ConvBNAct row .conv/.bn
    stages.{i}.{j}.*         -> the rows of stage i in order: MV2 rows (InvertedResidual /
                                MV2Stage) then the MobileViTBlock / MobileViTBlockV2 row
    final_conv.*             -> ClassifierHead row .expand.*
    head.fc.*                -> ClassifierHead row .fc.*
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn as nn

from zoo.registry import KEY_MAPS, KeyMap

__all__ = [
    "TinyViTRows", "tinyvit_rows", "map_tinyvit_key", "convert_timm_tinyvit",
    "MobileViTRows", "mobilevit_rows", "convert_timm_mobilevit",
]


def _rows(model: nn.Module) -> list[nn.Module]:
    rows = getattr(model, "model", None)
    if rows is None:
        raise TypeError("expected a zoo Model (rows in `model.model`)")
    return list(rows)


def _indices(rows: list[nn.Module], name: str) -> list[int]:
    return [i for i, m in enumerate(rows) if type(m).__name__ == name]


# --------------------------------------------------------------------------------------------- TinyViT


@dataclass(frozen=True)
class TinyViTRows:
    """Row indices of one TinyViT in a zoo model."""

    patch_embed: int
    conv_layer: int
    merging: tuple[int, ...]  # PatchMerging rows, in order
    stages: tuple[int, ...]  # BasicLayer rows, in order
    classify: int | None


def tinyvit_rows(model: nn.Module) -> TinyViTRows:
    rows = _rows(model)
    pe, cl = _indices(rows, "PatchEmbed"), _indices(rows, "ConvLayer")
    if len(pe) != 1 or len(cl) != 1:
        raise ValueError(f"expected one PatchEmbed and one ConvLayer row, found {len(pe)} and {len(cl)}")
    cls = _indices(rows, "ClassifierHead")
    return TinyViTRows(pe[0], cl[0], tuple(_indices(rows, "PatchMerging")), tuple(_indices(rows, "BasicLayer")),
                       cls[0] if cls else None)


def map_tinyvit_key(key: str, rows: TinyViTRows, layout: str = "timm") -> str | None:
    """Zoo key for one TinyViT key (``layout`` "timm", or "mobilesam" without the ``image_encoder.``
    prefix); ``None`` when the key has no place in the model."""
    if layout == "mobilesam":
        key = re.sub(r"\.c\.(weight|bias)$", r".conv.\1", key)
        key = key.replace("patch_embed.seq.0.", "patch_embed.conv1.").replace("patch_embed.seq.2.", "patch_embed.conv2.")
        m = re.match(r"layers\.(\d+)\.(blocks|downsample)\.(.*)$", key)
        if m:
            i, part, rest = int(m[1]), m[2], m[3]
            # MobileSAM merges at the end of a stage; timm (and the zoo row order) at the start of the next
            key = f"stages.{i + 1}.downsample.{rest}" if part == "downsample" else f"stages.{i}.blocks.{rest}"
        elif key.startswith(("norm_head.", "head.", "neck.")):
            return None
    elif layout != "timm":
        raise ValueError(f"unknown TinyViT layout {layout!r}; use 'timm' or 'mobilesam'")

    if key.startswith("patch_embed."):
        return f"model.{rows.patch_embed}.{key[len('patch_embed.'):]}"
    m = re.match(r"stages\.(\d+)\.(blocks|downsample)\.(.*)$", key)
    if m:
        i, part, rest = int(m[1]), m[2], m[3]
        if i == 0:
            return f"model.{rows.conv_layer}.blocks.{rest}" if part == "blocks" else None
        if part == "downsample":
            return f"model.{rows.merging[i - 1]}.{rest}" if i - 1 < len(rows.merging) else None
        return f"model.{rows.stages[i - 1]}.blocks.{rest}" if i - 1 < len(rows.stages) else None
    m = re.match(r"head\.(norm|fc)\.(.*)$", key)
    if m and rows.classify is not None:
        return f"model.{rows.classify}.{m[1]}.{m[2]}"
    return None


def convert_timm_tinyvit(sd: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    backbone = _indices(_rows(model), "TinyViTBackbone")
    if backbone:  # the whole-backbone row keeps timm's names
        cls = _indices(_rows(model), "ClassifierHead")
        out, skipped = {}, {}
        for key, value in sd.items():
            m = re.match(r"head\.(norm|fc)\.(.*)$", key)
            if key.endswith("attention_bias_idxs"):
                skipped[key] = "recomputed from the window size"
            elif key.startswith(("patch_embed.", "stages.")):
                out[f"model.{backbone[0]}.{key}"] = value
            elif m and cls:
                out[f"model.{cls[0]}.{m[1]}.{m[2]}"] = value
            else:
                skipped[key] = "no matching row (e.g. no ClassifierHead row for the head)"
        return out, skipped
    rows = tinyvit_rows(model)
    out: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for key, value in sd.items():
        if key.endswith("attention_bias_idxs"):
            skipped[key] = "recomputed from the window size"
            continue
        new = map_tinyvit_key(key, rows, "timm")
        if new is None:
            skipped[key] = "no matching row (e.g. no ClassifierHead row for the head)"
        else:
            out[new] = value
    return out, skipped


def _is_timm_tinyvit(sd: Mapping[str, torch.Tensor]) -> bool:
    return "patch_embed.conv1.conv.weight" in sd and any(k.startswith("stages.") and "attention_biases" in k for k in sd)


# ------------------------------------------------------------------------------------------- MobileViT


@dataclass(frozen=True)
class MobileViTRows:
    """Where timm's MobileViT prefixes live in a zoo model (``prefix -> zoo prefix``)."""

    prefixes: dict[str, str]
    classify: int | None


def mobilevit_rows(model: nn.Module) -> MobileViTRows:
    """Assign timm prefixes (``stem``, ``stages.{i}.{j}``, ``final_conv``) to zoo rows.

    Either one :class:`~zoo.nn.mobilevit.MobileViTBackbone` row (timm's names under ``model.{row}.``)
    or stage rows: the first ConvBNAct is the stem, each MV2Stage starts timm stage ``i`` with its
    blocks as ``j = 0..n-1``, and a following MobileViTBlock / MobileViTBlockV2 row takes the next ``j``.
    """
    rows = _rows(model)
    cls = _indices(rows, "ClassifierHead")
    classify = cls[0] if cls else None
    prefixes: dict[str, str] = {}
    backbone = _indices(rows, "MobileViTBackbone")
    if backbone:
        r = backbone[0]
        prefixes["stem"] = f"model.{r}.stem"
        prefixes["final_conv"] = f"model.{r}.final_conv"
        for i, stage in enumerate(rows[r].stages):
            for j in range(len(stage)):
                prefixes[f"stages.{i}.{j}"] = f"model.{r}.stages.{i}.{j}"
        return MobileViTRows(prefixes, classify)
    stage, j = -1, 0
    for r, module in enumerate(rows):
        name = type(module).__name__
        if name == "ConvBNAct" and stage < 0 and "stem" not in prefixes:
            prefixes["stem"] = f"model.{r}"
        elif name == "MV2Stage":
            stage, j = stage + 1, 0
            for k in range(len(module.blocks)):
                prefixes[f"stages.{stage}.{j}"] = f"model.{r}.blocks.{k}"
                j += 1
        elif name in ("MobileViTBlock", "MobileViTBlockV2") and stage >= 0:
            prefixes[f"stages.{stage}.{j}"] = f"model.{r}"
            j += 1
    if classify is not None and getattr(rows[classify], "expand", None) is not None:
        prefixes["final_conv"] = f"model.{classify}.expand"
    return MobileViTRows(prefixes, classify)


def convert_timm_mobilevit(sd: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    rows = mobilevit_rows(model)
    out: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for key, value in sd.items():
        m = re.match(r"(stem|final_conv|stages\.\d+\.\d+)\.(.*)$", key)
        if m and m[1] in rows.prefixes:
            out[f"{rows.prefixes[m[1]]}.{m[2]}"] = value
        elif key.startswith("head.fc.") and rows.classify is not None:
            out[f"model.{rows.classify}.fc.{key[len('head.fc.'):]}"] = value
        else:
            skipped[key] = "no matching row in this model"
    return out, skipped


def _is_timm_mobilevit(sd: Mapping[str, torch.Tensor]) -> bool:
    return "stem.conv.weight" in sd and any(k.startswith("stages.") and ".conv1_1x1." in k for k in sd) and any(
        ".transformer.0." in k for k in sd)


KEY_MAPS.register(KeyMap("timm TinyViT", _is_timm_tinyvit, convert_timm_tinyvit))
KEY_MAPS.register(KeyMap("timm MobileViT", _is_timm_mobilevit, convert_timm_mobilevit))
