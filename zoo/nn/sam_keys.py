"""Key map from the official MobileSAM / segment-anything checkpoint layout to zoo keys.

Segment Anything, arXiv:2304.02643; MobileSAM, arXiv:2306.14289.

Source layout (a plain state dict, as ``mobile_sam.pt`` ships)::

    image_encoder.patch_embed / layers.*  -> TinyViT rows (see zoo.nn.tiny_vit / timm_keys, "mobilesam")
    image_encoder.neck.{0,1,2,3}.*        -> SamNeck row .conv1 / .norm1 / .conv2 / .norm2
    image_encoder.norm_head.*, .head.*    -> skipped: TinyViT's classifier, unused by SAM
    prompt_encoder.*                      -> SamHead row .prompt_encoder.*
    mask_decoder.*                        -> SamHead row .mask_decoder.*

Rows are found by module type, so the map follows the cfg's row order.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn as nn

from zoo.registry import KEY_MAPS, KeyMap
from zoo.nn.timm_keys import map_tinyvit_key, tinyvit_rows

__all__ = ["is_sam_checkpoint", "convert_sam", "SAM_KEY_MAP"]

NECK_PARTS = {"0": "conv1", "1": "norm1", "2": "conv2", "3": "norm2"}
CLASSIFIER_REASON = "TinyViT classifier head, unused by SAM (the cfg has no classifier row)"


def is_sam_checkpoint(sd: Mapping[str, torch.Tensor]) -> bool:
    """True for a segment-anything style state dict (``image_encoder.*`` + ``mask_decoder.*``)."""
    return any(k.startswith("mask_decoder.") for k in sd) and any(k.startswith("image_encoder.") for k in sd)


def _row_of(rows: list[nn.Module], name: str) -> int:
    found = [i for i, m in enumerate(rows) if type(m).__name__ == name]
    if len(found) != 1:
        raise ValueError(f"a SAM checkpoint needs exactly one {name} row in the model, found {len(found)}")
    return found[0]


def convert_sam(sd: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(zoo state dict, {source key: reason skipped})``. Keys with no known place are passed through
    unchanged so the loader reports them as unexpected rather than losing them."""
    rows = list(model.model)
    neck, head = _row_of(rows, "SamNeck"), _row_of(rows, "SamHead")
    encoder_rows = tinyvit_rows(model)
    out: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for key, value in sd.items():
        if key.startswith("prompt_encoder.") or key.startswith("mask_decoder."):
            out[f"model.{head}.{key}"] = value
            continue
        if not key.startswith("image_encoder."):
            out[key] = value
            continue
        sub = key[len("image_encoder."):]
        if sub.startswith(("norm_head.", "head.")):
            skipped[key] = CLASSIFIER_REASON
            continue
        if sub.endswith("attention_bias_idxs"):
            skipped[key] = "index buffer, recomputed from the window size"
            continue
        m = re.match(r"neck\.(\d)\.(.+)$", sub)
        if m and m[1] in NECK_PARTS:
            out[f"model.{neck}.{NECK_PARTS[m[1]]}.{m[2]}"] = value
            continue
        new = map_tinyvit_key(sub, encoder_rows, layout="mobilesam")
        out[new if new is not None else key] = value
    return out, skipped


SAM_KEY_MAP = KEY_MAPS.register(KeyMap("segment-anything", is_sam_checkpoint, convert_sam))
