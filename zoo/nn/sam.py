"""Segment Anything rows: the image-encoder neck and the promptable mask head.

Segment Anything, Kirillov et al., arXiv:2304.02643; MobileSAM (TinyViT image encoder),
Zhang et al., arXiv:2306.14289.

``cfg/sam-tinyvit.yaml`` builds the whole segmenter as rows: TinyViT stages (``zoo.nn.tiny_vit``) ->
:class:`SamNeck` (to the 256-channel image embedding, stride 16) -> :class:`SamHead` (prompt encoder +
mask decoder). The head takes prompts as keyword inputs of ``Model.forward``.

Prompt shapes (pixel coordinates in the model-input frame, i.e. the padded ``H x W`` tensor):

=====================  ============================  ==================================
prompt                 one prompt set per image      ``N`` prompt sets per image
=====================  ============================  ==================================
``points``             ``(B, P, 2)`` x, y            ``(B, N, P, 2)``
``labels``             ``(B, P)`` 1 fg / 0 bg / -1   ``(B, N, P)``
``boxes``              ``(B, 4)`` x1, y1, x2, y2     ``(B, N, 4)``
``mask_inputs``        ``(B, 1, H/4, W/4)`` logits   ``(B, N, 1, H/4, W/4)``
masks (output)         ``(B, K, H/4, W/4)`` logits   ``(B, N, K, H/4, W/4)``
iou (output)           ``(B, K)``                    ``(B, N, K)``
=====================  ============================  ==================================

``K = 3`` with ``multimask_output=True`` else 1. All prompts given in one call use the same form and
the same ``N``. Prompt sets with fewer points are padded with label -1 (ignored, as in SAM). With no
prompt at all the head still predicts (from the output tokens alone), one set per image.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nn.common import LayerNorm2d
from zoo.nn.fast_cpu import conv_act
from zoo.nn.sam_mask_decoder import MaskDecoder
from zoo.nn.sam_prompt_encoder import PromptEncoder
from zoo.registry import register
from zoo.wiring import in_first, in_out, not_a_map, same_size

__all__ = ["SamNeck", "SamHead", "group_prompts"]

# SAM's input normalisation (ImageNet statistics in 0..255 pixel units).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@register(wiring=in_out(scale=False, spatial=same_size()))
class SamNeck(nn.Module):
    """1x1 conv -> LayerNorm2d -> 3x3 conv -> LayerNorm2d, convs without bias.

    ``(B, c1, h, w) -> (B, c2, h, w)``: the image embedding the mask decoder reads.
    """

    def __init__(self, c1: int, c2: int = 256) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c1, c2, kernel_size=1, bias=False)
        self.norm1 = LayerNorm2d(c2)
        self.conv2 = nn.Conv2d(c2, c2, kernel_size=3, padding=1, bias=False)
        self.norm2 = LayerNorm2d(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(conv_act(self.norm1(conv_act(x, self.conv1)), self.conv2))


def group_prompts(batch: int, points: torch.Tensor | None, labels: torch.Tensor | None,
                  boxes: torch.Tensor | None, mask_inputs: torch.Tensor | None
                  ) -> tuple[int | None, tuple[torch.Tensor | None, ...]]:
    """Check prompt shapes and flatten them to one row per prompt set.

    Returns ``(N, (points, labels, boxes, mask_inputs))`` with tensors flattened to ``(B*N, ...)``,
    where ``N`` is ``None`` for the one-set-per-image form (then ``B*N == B``).
    """
    grouped_dims = {"points": 4, "labels": 3, "boxes": 3, "mask_inputs": 5}
    given = {k: v for k, v in zip(grouped_dims, (points, labels, boxes, mask_inputs)) if v is not None}
    if (points is None) != (labels is None):
        raise ValueError("points and labels go together: points (B, [N,] P, 2) with labels (B, [N,] P)")
    forms = set()
    for name, t in given.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() not in (grouped_dims[name] - 1, grouped_dims[name]):
            raise ValueError(
                f"{name} must have {grouped_dims[name] - 1} dims (one prompt set per image) or "
                f"{grouped_dims[name]} (N sets per image), got shape {tuple(t.shape)}"
            )
        if t.shape[0] != batch:
            raise ValueError(f"{name} has batch {t.shape[0]} but there are {batch} images")
        forms.add(t.dim() == grouped_dims[name])
    if len(forms) > 1:
        raise ValueError("mix of prompt forms: give every prompt either with or without the N (sets per image) dim")
    if points is not None and (points.shape[-1] != 2 or points.shape[:-1] != labels.shape):
        raise ValueError(f"points {tuple(points.shape)} must be (..., P, 2) matching labels {tuple(labels.shape)}")
    if boxes is not None and boxes.shape[-1] != 4:
        raise ValueError(f"boxes must end with 4 values (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")
    if mask_inputs is not None and mask_inputs.shape[-3] != 1:
        raise ValueError(f"mask_inputs must have one channel, got shape {tuple(mask_inputs.shape)}")
    if not forms or not forms.pop():
        return None, (points, labels, boxes, mask_inputs)
    sets = {t.shape[1] for t in given.values()}
    if len(sets) > 1:
        raise ValueError(f"prompts disagree on N (prompt sets per image): {sorted(sets)}")
    n = sets.pop()
    if n < 1:
        raise ValueError("N (prompt sets per image) must be at least 1")
    flat = tuple(None if t is None else t.flatten(0, 1) for t in (points, labels, boxes, mask_inputs))
    return n, flat


@register(wiring=in_first(spatial=not_a_map()))
class SamHead(nn.Module):
    """Prompt encoder + mask decoder on an image embedding ``(B, C, h, w)``.

    Returns ``(low_res_mask_logits, iou_predictions)`` with the shapes in the module docstring; the
    masks are at ``4h x 4w`` (a quarter of the model input). Prompt coordinates are pixels of the
    model input, whose size is ``stride * (h, w)``; the stride of the input row is set by the
    builder's trial run (16 for SAM's encoders).
    """

    task = "segment"
    # the input statistics SAM's weights were trained with (zoo.data.normalise reads them)
    pixel_mean = PIXEL_MEAN
    pixel_std = PIXEL_STD

    def __init__(self, c1: int = 256, depth: int = 2, num_heads: int = 8, mlp_dim: int = 2048,
                 downsample_rate: int = 2, num_multimask_outputs: int = 3, mask_in_chans: int = 16,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.prompt_encoder = PromptEncoder(c1, mask_in_chans)
        self.mask_decoder = MaskDecoder(c1, depth, num_heads, mlp_dim, downsample_rate, num_multimask_outputs,
                                        iou_head_depth, iou_head_hidden_dim)
        self.stride = 16.0

    def set_strides(self, strides: list[float]) -> None:
        self.stride = float(strides[0])

    def input_size(self, embed_size: tuple[int, int]) -> tuple[int, int]:
        """Model-input ``(H, W)`` that produced an embedding of ``embed_size``."""
        return round(embed_size[0] * self.stride), round(embed_size[1] * self.stride)

    def forward(self, x: torch.Tensor, *, points: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                boxes: torch.Tensor | None = None, mask_inputs: torch.Tensor | None = None,
                multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, h, w = x.shape
        sets, (points, labels, boxes, mask_inputs) = group_prompts(batch, points, labels, boxes, mask_inputs)
        sparse, dense = self.prompt_encoder(points, labels, boxes, mask_inputs, self.input_size((h, w)), (h, w),
                                            batch=batch)
        masks, iou = self.mask_decoder(x, self.prompt_encoder.dense_pe((h, w)).to(x.dtype), sparse.to(x.dtype),
                                       dense.to(x.dtype), multimask_output)
        if sets is not None:
            masks = masks.unflatten(0, (batch, sets))
            iou = iou.unflatten(0, (batch, sets))
        return masks, iou


