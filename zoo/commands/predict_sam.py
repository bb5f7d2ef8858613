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

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zoo.engine.plotting import overlay_masks
from zoo.sam_predictor import SamPredictor

__all__ = ["predict_sam", "parse_point", "parse_box", "add_prompt_arguments"]


def parse_point(text: str) -> tuple[float, float, int]:
    """``"x,y"`` or ``"x,y,label"`` -> ``(x, y, label)``; label defaults to 1 (foreground).

    Raises ``argparse.ArgumentTypeError`` so argparse prints a one-line usage error.
    """
    parts = text.split(",")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"point {text!r} must be x,y or x,y,label (label 1 or 0)") from None
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"point {text!r}: label must be 1 (foreground) or 0 (background)")
    return x, y, label


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x1,y1,x2,y2"`` -> a box; raises ``argparse.ArgumentTypeError`` when malformed."""
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"box {text!r} must be x1,y1,x2,y2") from None
    if x2 <= x1 or y2 <= y1:
        raise argparse.ArgumentTypeError(f"box {text!r} needs x2 > x1 and y2 > y1")
    return x1, y1, x2, y2


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """``--points x,y[,label] ...`` and ``--box x1,y1,x2,y2`` (repeatable) for ``zoo predict``."""
    parser.add_argument("--points", nargs="+", type=parse_point, default=[], metavar="X,Y[,LABEL]",
                        help="SAM point prompts in image pixels; label 1 foreground (default) or 0 background")
    parser.add_argument("--box", action="append", type=parse_box, default=[], metavar="X1,Y1,X2,Y2",
                        help="SAM box prompt in image pixels (repeat for one mask per box)")


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
