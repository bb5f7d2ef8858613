"""``SamPredictor``: the Segment Anything image-then-prompts API on a zoo SAM model.

Segment Anything, Kirillov et al., arXiv:2304.02643 (Sec. 3, "promptable segmentation").

``set_image`` resizes an ``H x W x 3`` uint8 image so its longest side is the model input size,
normalises it as in training (:mod:`zoo.data.normalise`: SAM's pixel mean/std unless the cfg gives
its own), pads it bottom-right to a square, and caches the image embedding. ``predict`` then maps
prompts from original-image pixels into the model-input frame, runs only the prompt encoder + mask
decoder, and returns masks at the original resolution.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from zoo.data.normalise import InputNormaliser
from zoo.nn.sam import SamHead

__all__ = ["SamPredictor", "resized_shape"]

DEFAULT_INPUT_SIZE = 1024  # SAM's pretraining input size


def resized_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """``(h, w)`` after scaling so the longest side is ``longest`` (rounded as SAM does)."""
    scale = longest / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class SamPredictor:
    """Predict masks for one image from point / box / mask prompts.

    Args:
        model: a :class:`zoo.model.Model` whose last row is a :class:`~zoo.nn.sam.SamHead`.
        input_size: side of the square model input; default the YAML's ``input_size`` key, else 1024.
            Must be a multiple of the head's input stride (16).
        mask_threshold: logit above which a pixel is in the mask.
    """

    def __init__(self, model: Any, input_size: int | None = None, mask_threshold: float = 0.0) -> None:
        head = model.model[-1]
        if not isinstance(head, SamHead):
            raise TypeError(f"SamPredictor needs a model whose last row is SamHead, got {type(head).__name__}")
        size = int(input_size or getattr(model, "yaml", {}).get("input_size", DEFAULT_INPUT_SIZE))
        if size <= 0 or size % round(head.stride):
            raise ValueError(f"input_size must be a positive multiple of {round(head.stride)}, got {size}")
        self.model = model.eval()
        self.head = head
        self.input_size = size
        self.mask_threshold = mask_threshold
        self.normalise = InputNormaliser.for_model(model)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset_image(self) -> None:
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_shape: tuple[int, int] | None = None  # image size inside the padded input

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB -> ``(1, 3, S, S)`` normalised, padded model input."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            is_array = isinstance(image, np.ndarray)
            got = f"{image.dtype} array of shape {image.shape}" if is_array else type(image).__name__
            raise ValueError(f"set_image expects an HxWx3 uint8 RGB array, got {got}")
        h, w = resized_shape(image.shape[0], image.shape[1], self.input_size)
        resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        x = self.normalise.image(resized)
        return F.pad(x, (0, self.input_size - w, 0, self.input_size - h))  # zero after normalising, as SAM

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Run every row but the head: ``(B, 3, S, S)`` -> the head's input ``(B, C, S/16, S/16)``."""
        records, rows = self.model.records, self.model.model
        outputs: dict[int, Any] = {}

        def read(i: int, s: int, previous: Any) -> Any:
            return previous if s == -1 else outputs[s if s >= 0 else i + s]

        x: Any = images
        for record, module in zip(records[:-1], rows[:-1]):
            i, src = record.index, record.from_
            row_in = [read(i, s, x) for s in src] if isinstance(src, tuple) else read(i, src, x)
            x = outputs[i] = module(row_in)
        head = records[-1]
        if isinstance(head.from_, tuple):
            raise ValueError("SamHead reads a single image embedding; its row must have one 'from'")
        return read(head.index, head.from_, x)

    def set_image(self, image: np.ndarray) -> None:
        """Compute and cache the embedding of an ``H x W x 3`` uint8 RGB image."""
        x = self.preprocess(image).to(self.device, next(self.model.parameters()).dtype)
        self.features = self.embed(x)
        self.original_size = (image.shape[0], image.shape[1])
        self.input_shape = resized_shape(image.shape[0], image.shape[1], self.input_size)

    def to_input_frame(self, coords: np.ndarray) -> np.ndarray:
        """Scale ``(..., 2)`` x, y from original-image pixels to model-input pixels."""
        (h0, w0), (h1, w1) = self._require_image(), self.input_shape
        return coords * np.array([w1 / w0, h1 / h0], dtype=np.float64)

    def _require_image(self) -> tuple[int, int]:
        if self.features is None or self.original_size is None:
            raise RuntimeError("call set_image(image) before predict()")
        return self.original_size

    def predict(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_input: np.ndarray | None = None,
                multimask_output: bool = True, return_logits: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One prompt set -> ``masks (K, H, W)`` (bool, or float logits with ``return_logits``),
        ``scores (K,)`` predicted IoU, ``low_res_logits (K, S/4, S/4)``.

        ``point_coords (P, 2)`` x, y and ``point_labels (P,)`` (1 fg, 0 bg) in original-image pixels;
        ``box (4,)`` x1, y1, x2, y2; ``mask_input (1, S/4, S/4)`` logits from a previous call.
        """
        coords = None if point_coords is None else np.asarray(point_coords, dtype=np.float64)[None]
        labels = None if point_labels is None else np.asarray(point_labels)[None]
        boxes = None if box is None else np.asarray(box, dtype=np.float64).reshape(1, 4)
        masks_in = None if mask_input is None else np.asarray(mask_input, dtype=np.float32)[None]
        masks, scores, low = self.predict_sets(coords, labels, boxes, masks_in, multimask_output, return_logits)
        return masks[0], scores[0], low[0]

    @torch.no_grad()
    def predict_sets(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                     boxes: np.ndarray | None = None, mask_inputs: np.ndarray | None = None,
                     multimask_output: bool = True, return_logits: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``N`` prompt sets on the cached image: ``point_coords (N, P, 2)``, ``point_labels (N, P)``,
        ``boxes (N, 4)``, ``mask_inputs (N, 1, S/4, S/4)`` -> ``masks (N, K, H, W)``, ``scores (N, K)``,
        ``low_res_logits (N, K, S/4, S/4)``."""
        low, iou = self.prompt_logits(point_coords, point_labels, boxes, mask_inputs, multimask_output)
        masks = self.postprocess(low)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks.cpu().numpy(), iou.float().cpu().numpy(), low.float().cpu().numpy()

    @torch.no_grad()
    def prompt_logits(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                      boxes: np.ndarray | None = None, mask_inputs: np.ndarray | None = None,
                      multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`predict_sets`, but tensors on the model's device and no upsampling:
        ``low_res_logits (N, K, S/4, S/4)``, ``iou_predictions (N, K)``."""
        self._require_image()
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels go together")
        device, dtype = self.device, self.features.dtype
        kwargs: dict[str, torch.Tensor] = {}
        if point_coords is not None:
            pts = self.to_input_frame(np.asarray(point_coords, dtype=np.float64))
            kwargs["points"] = torch.as_tensor(pts, dtype=dtype, device=device).unsqueeze(0)
            kwargs["labels"] = torch.as_tensor(np.asarray(point_labels), dtype=torch.long, device=device).unsqueeze(0)
        if boxes is not None:
            corners = self.to_input_frame(np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)).reshape(-1, 4)
            kwargs["boxes"] = torch.as_tensor(corners, dtype=dtype, device=device).unsqueeze(0)
        if mask_inputs is not None:
            kwargs["mask_inputs"] = torch.as_tensor(mask_inputs, dtype=dtype, device=device).unsqueeze(0)
        if not kwargs:
            raise ValueError("give at least one prompt: points, a box or a mask input")
        low, iou = self.head(self.features, multimask_output=multimask_output, **kwargs)
        return low[0], iou[0]  # (N, K, S/4, S/4), (N, K)

    def postprocess(self, low_res: torch.Tensor) -> torch.Tensor:
        """``(N, K, S/4, S/4)`` logits -> ``(N, K, H, W)`` logits at the original image size."""
        n, k = low_res.shape[:2]
        h1, w1 = self.input_shape
        x = F.interpolate(low_res.float().flatten(0, 1).unsqueeze(1), size=(self.input_size, self.input_size),
                          mode="bilinear", align_corners=False)
        x = F.interpolate(x[..., :h1, :w1], size=self.original_size, mode="bilinear", align_corners=False)
        return x.view(n, k, *self.original_size)
