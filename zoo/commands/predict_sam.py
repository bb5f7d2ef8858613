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

__all__ = ["predict_sam", "parse_point", "parse_box", "add_prompt_arguments"]


def predict_sam(model: Any, source: Path, points: list[tuple[float, float, int]],
                boxes: list[tuple[float, float, float, float]], out_dir: Path, input_size: int | None = None) -> Path:
    """Segment ``source`` with the prompts and write ``out_dir/<stem>_sam.png``; returns that path.

    ``input_size`` overrides the model input side (default: the cfg's ``input_size``, else 1024).
    """
    source, out_dir = Path(source), Path(out_dir)
    if not points and not boxes:
        raise ValueError("give at least one prompt: --points x,y[,label] and/or --box x1,y1,x2,y2")
    for x, y, label in points:
        if label not in (0, 1):
            raise ValueError(f"point ({x}, {y}) has label {label}; use 1 (foreground) or 0 (background)")
    for box in boxes:
        if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"box {tuple(box)} must be x1,y1,x2,y2 with x2 > x1 and y2 > y1")
    if not source.is_file():
        raise FileNotFoundError(f"image not found: {source}")
    image = np.asarray(Image.open(source).convert("RGB"))

    predictor = SamPredictor(model, input_size=input_size)
    predictor.set_image(image)
    coords = np.array([[x, y] for x, y, _ in points], dtype=np.float64) if points else None
    labels = np.array([label for _, _, label in points], dtype=np.int64) if points else None
    if len(boxes) <= 1:
        multimask = len(points) == 1 and not boxes
        masks, scores, _ = predictor.predict(coords, labels, np.array(boxes[0]) if boxes else None,
                                             multimask_output=multimask)
        drawn = [masks[int(np.argmax(scores))]]
    else:
        n = len(boxes)
        set_coords = None if coords is None else np.repeat(coords[None], n, axis=0)
        set_labels = None if labels is None else np.repeat(labels[None], n, axis=0)
        masks, _, _ = predictor.predict_sets(set_coords, set_labels, np.array(boxes, dtype=np.float64),
                                             multimask_output=False)
        drawn = [m[0] for m in masks]

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{source.stem}_sam.png"
    overlay_masks(image, drawn, points, boxes).save(path)
    return path
