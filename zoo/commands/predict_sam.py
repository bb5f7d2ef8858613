"""``zoo predict`` for SAM models: prompts on one image -> an overlay PNG.

Segment Anything, arXiv:2304.02643. Prompts are in original-image pixels:

- points ``(x, y, label)``, label 1 foreground / 0 background;
- boxes ``(x1, y1, x2, y2)``.

With at most one box, all points and the box form one prompt set. With several boxes, each box is its
own prompt set (the points, if any, join every set), one mask per box. A single point and nothing else is
ambiguous, so SAM's three candidate masks are computed and the one with the highest predicted IoU is
drawn; otherwise the single-mask output is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zoo.commands.predict_args import add_prompt_arguments, parse_box, parse_point  # re-exported
from zoo.engine.plotting import overlay_masks
from zoo.sam_predictor import SamPredictor

__all__ = ["predict_sam", "segment_image", "segment_everything", "everything_summary", "check_prompts", "mask_summary", "draw_sam", "parse_point", "parse_box",
           "add_prompt_arguments"]


def check_prompts(points: list[tuple[float, float, int]], boxes: list[tuple[float, float, float, float]]) -> None:
    """Raise ``ValueError`` (one line) for no prompt, a bad point label or a malformed box."""
    if not points and not boxes:
        raise ValueError("give at least one prompt: --points x,y[,label] and/or --box x1,y1,x2,y2")
    for x, y, label in points:
        if label not in (0, 1):
            raise ValueError(f"point ({x}, {y}) has label {label}; use 1 (foreground) or 0 (background)")
    for box in boxes:
        if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"box {tuple(box)} must be x1,y1,x2,y2 with x2 > x1 and y2 > y1")


def segment_image(model: Any, image: np.ndarray, points: list[tuple[float, float, int]],
                  boxes: list[tuple[float, float, float, float]], input_size: int | None = None
                  ) -> tuple[list[np.ndarray], list[float]]:
    """Masks (``H x W`` bool, original resolution) and their predicted IoU for one RGB image: one mask
    for a single prompt set, one per box for several boxes (see the module docstring)."""
    check_prompts(points, boxes)
    predictor = SamPredictor(model, input_size=input_size)
    predictor.set_image(image)
    coords = np.array([[x, y] for x, y, _ in points], dtype=np.float64) if points else None
    labels = np.array([label for _, _, label in points], dtype=np.int64) if points else None
    if len(boxes) <= 1:
        multimask = len(points) == 1 and not boxes
        masks, scores, _ = predictor.predict(coords, labels, np.array(boxes[0]) if boxes else None,
                                             multimask_output=multimask)
        best = int(np.argmax(scores))
        return [np.asarray(masks[best])], [float(np.asarray(scores).reshape(-1)[best])]
    n = len(boxes)
    set_coords = None if coords is None else np.repeat(coords[None], n, axis=0)
    set_labels = None if labels is None else np.repeat(labels[None], n, axis=0)
    masks, scores, _ = predictor.predict_sets(set_coords, set_labels, np.array(boxes, dtype=np.float64),
                                              multimask_output=False)
    return [np.asarray(m[0]) for m in masks], [float(np.asarray(s).reshape(-1)[0]) for s in scores]


def segment_everything(model: Any, image: np.ndarray, points_per_side: int = 32, input_size: int | None = None
                       ) -> list[dict[str, Any]]:
    """All masks of one RGB image from a grid of point prompts (:class:`SamAutomaticMaskGenerator`)."""
    from zoo.automatic_masks import SamAutomaticMaskGenerator

    if points_per_side < 1:
        raise ValueError(f"--points-per-side must be >= 1, got {points_per_side}")
    generator = SamAutomaticMaskGenerator(SamPredictor(model, input_size=input_size), points_per_side=points_per_side)
    return generator.generate(image)


def everything_summary(found: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready summary of one automatic mask: area, bbox x, y, w, h, scores and its prompt point."""
    return {"area": int(found["area"]), "bbox": [int(v) for v in found["bbox"]],
            "predicted_iou": round(float(found["predicted_iou"]), 6),
            "stability_score": round(float(found["stability_score"]), 6),
            "point_coords": [[round(float(v), 2) for v in xy] for xy in found["point_coords"]]}


def mask_summary(mask: np.ndarray, score: float) -> dict[str, Any]:
    """JSON-ready summary of one mask: predicted IoU, pixel area and bounding box ``x1, y1, x2, y2``."""
    ys, xs = np.nonzero(mask)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
    return {"score": round(float(score), 6), "area": int(len(xs)), "box": box}


def draw_sam(image: np.ndarray, masks: list[np.ndarray], points: list[tuple[float, float, int]],
             boxes: list[tuple[float, float, float, float]], path: Path) -> Path:
    """Write the mask overlay (with its prompts) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay_masks(image, masks, points, boxes).save(path)
    return path


def predict_sam(model: Any, source: Path, points: list[tuple[float, float, int]],
                boxes: list[tuple[float, float, float, float]], out_dir: Path, input_size: int | None = None) -> Path:
    """Segment ``source`` with the prompts and write ``out_dir/<stem>_sam.png``; returns that path.

    ``input_size`` overrides the model input side (default: the cfg's ``input_size``, else 1024).
    """
    source, out_dir = Path(source), Path(out_dir)
    check_prompts(points, boxes)
    if not source.is_file():
        raise FileNotFoundError(f"image not found: {source}")
    image = np.asarray(Image.open(source).convert("RGB"))
    masks, _ = segment_image(model, image, points, boxes, input_size)
    return draw_sam(image, masks, points, boxes, out_dir / f"{source.stem}_sam.png")
