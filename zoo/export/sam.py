"""Segment Anything as two ONNX graphs, the split segment-anything deploys: the image encoder, run
once per image, and the prompt encoder + mask decoder, run per prompt on the cached embedding.

The encoder graph takes what the PyTorch rows take: the image resized to its longest side,
normalised and zero-padded to the square (:meth:`zoo.sam_predictor.SamPredictor.preprocess`); its
file's metadata (:class:`SamExportMetadata`) says how: ``pixel_mean`` / ``pixel_std`` / ``preprocess``.

Segment Anything, Kirillov et al., arXiv:2304.02643; its ``utils/onnx.py`` defines the prompt
interface followed here (read for the interface only):

* prompts are points: ``point_coords (B, N, 2)`` x, y in pixels of the model input (the padded
  square the encoder saw) and ``point_labels (B, N)`` float: 1 foreground, 0 background,
  -1 padding, 2 / 3 a box's top-left / bottom-right corner. A box is therefore two points, and a
  prompt without a box ends with one padding point (what the decoder was trained with);
  :func:`prompt_arrays` builds these arrays. ``N`` is a dynamic axis.
* ``mask_input (B, 1, 4h, 4w)`` low-resolution mask logits (a previous prediction) and
  ``has_mask_input (B,)``: 1 uses the mask, 0 the learned "no mask" embedding, so the graph has no
  branch on whether a mask was given.

Unlike segment-anything's graph this one takes a batch of ``B`` prompt sets, row ``b`` reading
image embedding ``b``, and returns the low-resolution logits and IoU predictions exactly as
:class:`~zoo.nn.sam.SamHead` does (``K = 3`` masks with ``multimask_output`` else 1); resizing
masks to the original image stays with the caller (:meth:`zoo.sam_predictor.SamPredictor.postprocess`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from zoo.data.normalise import InputNormaliser
from zoo.export.graphs import deployed_copy
from zoo.export.metadata import ExportMetadata
from zoo.export.onnx import onnx_bytes, unsupported_op, write_onnx
from zoo.export.options import DEFAULT_OPSET, ExportError, check_imgsz
from zoo.nn.common import exporting
from zoo.nn.sam import SamHead
from zoo.nn.sam_prompt_encoder import NEGATIVE_LABEL, PAD_LABEL, POSITIVE_LABEL
from zoo.sam_predictor import SamPredictor
from zoo.version import __version__

if TYPE_CHECKING:  # zoo.model imports zoo.export, never the other way round
    from zoo.model import Model

__all__ = [
    "BOX_TOP_LEFT_LABEL", "BOX_BOTTOM_RIGHT_LABEL", "ENCODER_INPUTS", "DECODER_INPUTS", "SamExport",
    "SamExportMetadata", "SamImageEncoder", "SamPromptDecoder", "export_sam", "export_sam_timed", "prompt_arrays",
]

BOX_TOP_LEFT_LABEL = 2
BOX_BOTTOM_RIGHT_LABEL = 3
ENCODER_INPUTS = ("images",)
ENCODER_OUTPUTS = ("image_embeddings",)
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_OUTPUTS = ("masks", "iou_predictions")


def _sam_head(model: Model) -> SamHead:
    head = model.model[-1] if hasattr(model, "model") else None
    if not isinstance(head, SamHead):
        raise ExportError(f"SAM export needs a model whose last row is SamHead, got {type(head).__name__}; "
                          "export other models with Model.export / zoo export")
    return head


class SamImageEncoder(nn.Module):
    """Every row of a SAM model but the head: ``images (B, 3, H, W)`` (normalised, padded) ->
    ``image_embeddings (B, C, H/16, W/16)``."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        _sam_head(model)
        self.model = model
        self._rows = SamPredictor(model)  # its embed() walks the rows up to the head's input

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._rows.embed(images)


class SamPromptDecoder(nn.Module):
    """SAM's prompt encoder and mask decoder on point-form prompts (see the module docstring).

    ``forward(image_embeddings (B, C, h, w), point_coords (B, N, 2), point_labels (B, N),
    mask_input (B, 1, 4h, 4w), has_mask_input (B,))`` -> ``masks (B, K, 4h, 4w)`` logits and
    ``iou_predictions (B, K)``, equal to ``SamHead(image_embeddings, points=..., labels=...,
    boxes=..., mask_inputs=...)`` for the same prompts.
    """

    def __init__(self, head: SamHead, multimask_output: bool = True) -> None:
        super().__init__()
        self.head = head
        self.multimask_output = multimask_output

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, input_h: float | torch.Tensor,
                     input_w: float | torch.Tensor) -> torch.Tensor:
        """Sparse prompt tokens ``(B, N, C)``: the Fourier encoding of each point's pixel centre plus the
        learned embedding of its label; padding points are the "not a point" embedding."""
        encoder = self.head.prompt_encoder
        centres = coords.float() + 0.5
        # input_h / input_w are ints in eager and traced sizes while exporting: scaling x and y apart
        # keeps them out of a constant tensor
        normalised = torch.stack((centres[..., 0] * (1.0 / input_w), centres[..., 1] * (1.0 / input_h)), -1)
        emb = encoder.pe_layer.encode(normalised)
        labels = labels.unsqueeze(-1)
        emb = torch.where(labels == PAD_LABEL, encoder.not_a_point_embed.weight.to(emb.dtype), emb)
        kinds = (NEGATIVE_LABEL, POSITIVE_LABEL, BOX_TOP_LEFT_LABEL, BOX_BOTTOM_RIGHT_LABEL)
        for kind, table in zip(kinds, encoder.point_embeddings):  # adding zeros leaves SamHead's sums exact
            emb = emb + (labels == kind) * table.weight
        return emb

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head = self.head
        encoder = head.prompt_encoder
        if not exporting() and point_coords.shape[0] != image_embeddings.shape[0]:
            raise ValueError(f"{point_coords.shape[0]} prompt sets for {image_embeddings.shape[0]} image embeddings: "
                             "the decoder graph takes one prompt set per embedding (repeat the embedding)")
        h, w = image_embeddings.shape[-2:]
        sparse = self.embed_points(point_coords, point_labels, h * head.stride, w * head.stride)
        # blending by the flag instead of branching: 1 * mask + 0 * no-mask is the mask, bit for bit
        flag = has_mask_input.to(image_embeddings.dtype).reshape(-1, 1, 1, 1)
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = flag * encoder.mask_downscaling(mask_input) + (1.0 - flag) * no_mask
        image_pe = encoder.dense_pe((h, w)).to(image_embeddings.dtype)
        masks, iou = head.mask_decoder.predict_all(image_embeddings, image_pe, sparse.to(image_embeddings.dtype),
                                                   dense)
        keep = slice(1, None) if self.multimask_output else slice(0, 1)
        return masks[:, keep], iou[:, keep]


def prompt_arrays(points: np.ndarray | torch.Tensor | None = None, labels: np.ndarray | torch.Tensor | None = None,
                  box: np.ndarray | torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One prompt set as the decoder graph's ``point_coords (1, N, 2)`` and ``point_labels (1, N)``
    (float32): the points, then the box as two corner points labelled 2 and 3, or one padding point
    when there is no box (as segment-anything's predictor feeds its ONNX model)."""
    coords = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32).reshape(-1, 2)
    kinds = np.zeros((0,), np.float32) if labels is None else np.asarray(labels, np.float32).reshape(-1)
    if len(coords) != len(kinds):
        raise ValueError(f"{len(coords)} points but {len(kinds)} labels")
    if box is not None:
        corners = np.asarray(box, np.float32).reshape(2, 2)
        coords = np.concatenate([coords, corners])
        kinds = np.concatenate([kinds, np.array([BOX_TOP_LEFT_LABEL, BOX_BOTTOM_RIGHT_LABEL], np.float32)])
    else:
        coords = np.concatenate([coords, np.zeros((1, 2), np.float32)])
        kinds = np.concatenate([kinds, np.array([PAD_LABEL], np.float32)])
    return coords[None], kinds[None]


@dataclass
class SamExportMetadata(ExportMetadata):
    """:class:`~zoo.export.metadata.ExportMetadata` plus what a SAM graph needs said: which of the two
    graphs it is and how its input is prepared (outside the graph, as segment-anything does)."""

    graph: str = ""  # "image_encoder" or "prompt_decoder"
    pixel_mean: list[float] | None = None  # 0..1 units, subtracted before the encoder (outside the graph)
    pixel_std: list[float] | None = None  # 0..1 units, divided by after pixel_mean
    preprocess: str = ""


ENCODER_PREPROCESS = ("resize the longest side to imgsz, pixels * input_scale, minus pixel_mean, divided by "
                      "pixel_std, then zero-pad bottom-right to imgsz x imgsz (zoo.SamPredictor.preprocess)")
DECODER_PREPROCESS = ("point_coords in pixels of the encoder input (after the resize); a box is two points "
                      "labelled 2 and 3, a prompt without a box ends with a point (0, 0) labelled -1 "
                      "(zoo.export.sam.prompt_arrays); has_mask_input 0 ignores mask_input")


@dataclass(frozen=True)
class SamExport:
    """What :func:`export_sam_timed` wrote: the two graphs and the seconds each export took."""

    encoder: Path
    decoder: Path
    encoder_seconds: float
    decoder_seconds: float


def _paths(folder_or_prefix: str | Path, name: str) -> tuple[Path, Path]:
    """``dir/`` -> ``dir/{name}-encoder.onnx`` + ``-decoder.onnx``; ``path/prefix[.onnx]`` -> ``path/prefix-...``."""
    target = Path(folder_or_prefix)
    if target.is_dir() or str(folder_or_prefix).endswith(("/", "\\")):
        target = target / name
    elif target.suffix == ".onnx":
        target = target.with_suffix("")
    return target.with_name(f"{target.name}-encoder.onnx"), target.with_name(f"{target.name}-decoder.onnx")


def _values(stats: torch.Tensor | None) -> list[float] | None:
    return None if stats is None else stats.flatten().tolist()


def _write(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, metadata: SamExportMetadata,
           input_names: tuple[str, ...], dynamic_axes: dict[str, dict[int, str]]) -> float:
    """Trace ``module`` with torch's TorchScript-based exporter (as :mod:`zoo.export.onnx` does) and
    write it with ``metadata``; returns the seconds it took."""
    start = time.perf_counter()
    try:
        data = onnx_bytes(module.eval(), args, metadata.opset or DEFAULT_OPSET, input_names,
                          metadata.output_names, dynamic_axes)
    except Exception as exc:
        raise ExportError(f"SAM {metadata.graph} export failed on {unsupported_op(exc)} "
                          f"(opset {metadata.opset})") from None
    write_onnx(data, path, metadata, simplify=False)
    return time.perf_counter() - start


def export_sam(model: Model, folder_or_prefix: str | Path, imgsz: int | None = None, dynamic: bool = False,
               multimask_output: bool = True, opset: int | None = None) -> tuple[Path, Path]:
    """Write ``model`` (a SAM: rows ending in :class:`~zoo.nn.sam.SamHead`; left unchanged) as an
    image-encoder graph and a prompt-decoder graph; returns ``(encoder_path, decoder_path)``.

    ``folder_or_prefix``: a folder (``{folder}/{model name}-encoder.onnx`` / ``-decoder.onnx``) or a
    path prefix (``out/mobile_sam`` -> ``out/mobile_sam-encoder.onnx`` ...). ``imgsz``: the square
    input side (default the cfg's ``input_size``, else 1024). The batch axis of both graphs and the
    number of prompt points are always dynamic; ``dynamic`` also frees the image height / width
    (encoder) and the embedding size (decoder). ``multimask_output``: the decoder returns SAM's
    three ambiguity masks, else its single-mask output. ``opset``: default 17.
    """
    written = export_sam_timed(model, folder_or_prefix, imgsz, dynamic, multimask_output, opset)
    return written.encoder, written.decoder


def export_sam_timed(model: Model, folder_or_prefix: str | Path, imgsz: int | None = None, dynamic: bool = False,
                     multimask_output: bool = True, opset: int | None = None) -> SamExport:
    """:func:`export_sam`, also reporting how long each graph took to export."""
    head = _sam_head(model)
    stride = round(head.stride)
    size = int(imgsz or model.yaml.get("input_size", 1024))
    check_imgsz((size, size), stride)
    encoder_path, decoder_path = _paths(folder_or_prefix, model.name or "sam")
    deployed = deployed_copy(model)  # BN folded, CPU, float32: the caller's model stays as it was
    head = deployed.model[-1]
    normaliser = InputNormaliser.for_model(model)
    common: dict[str, Any] = dict(
        task="segment", names={}, imgsz=(size, size), stride=stride, model=str(model.name or ""),
        zoo_version=__version__, dynamic=dynamic, opset=opset or DEFAULT_OPSET, mean=None, std=None,
        resize="longest_side", pixel_mean=_values(normaliser.mean), pixel_std=_values(normaliser.std))

    encoder_meta = SamExportMetadata(
        **common, graph="image_encoder", input_name=ENCODER_INPUTS[0], output_names=list(ENCODER_OUTPUTS),
        preprocess=ENCODER_PREPROCESS, outputs=f"image_embeddings (B, C, H/{stride}, W/{stride})")
    spatial = {2: "height", 3: "width"} if dynamic else {}
    encoder_axes = {"images": {0: "batch", **spatial}, "image_embeddings": {0: "batch"}}
    if dynamic:
        encoder_axes["image_embeddings"].update({2: "embed_height", 3: "embed_width"})
    images = torch.zeros(1, deployed.ch, size, size)
    encoder_seconds = _write(SamImageEncoder(deployed), (images,), encoder_path, encoder_meta, ENCODER_INPUTS,
                             encoder_axes)

    masks = 3 if multimask_output else 1
    decoder_meta = SamExportMetadata(
        **common, graph="prompt_decoder", input_name=DECODER_INPUTS[0], output_names=list(DECODER_OUTPUTS),
        preprocess=DECODER_PREPROCESS,
        outputs=f"masks (B, {masks}, 4h, 4w) low-resolution logits, iou_predictions (B, {masks})")
    h = w = size // stride
    coords, labels = prompt_arrays([[size / 2, size / 2]], [POSITIVE_LABEL])
    example = (torch.zeros(1, head.mask_decoder.embed_dim, h, w), torch.from_numpy(coords), torch.from_numpy(labels),
               torch.zeros(1, 1, 4 * h, 4 * w), torch.zeros(1))
    decoder_axes = {name: {0: "batch"} for name in DECODER_INPUTS + DECODER_OUTPUTS}
    for name in ("point_coords", "point_labels"):
        decoder_axes[name][1] = "num_points"
    if dynamic:
        decoder_axes["image_embeddings"].update({2: "embed_height", 3: "embed_width"})
        for name in ("mask_input", "masks"):
            decoder_axes[name].update({2: "mask_height", 3: "mask_width"})
    decoder_seconds = _write(SamPromptDecoder(head, multimask_output), example, decoder_path, decoder_meta,
                             DECODER_INPUTS, decoder_axes)
    return SamExport(encoder_path, decoder_path, encoder_seconds, decoder_seconds)
