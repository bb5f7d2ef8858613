"""Training plots: loss / metric curves from ``results.csv`` and prediction overlays on images."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from zoo.drawing import (BOX_COLOUR, MASK_COLOURS, NEGATIVE_COLOUR, POSITIVE_COLOUR, class_colour, draw_boxes,
                         draw_label, overlay_masks)

__all__ = ["plot_results", "draw_boxes", "draw_label", "overlay_masks", "save_grid", "class_colour", "MASK_COLOURS",
           "POSITIVE_COLOUR", "NEGATIVE_COLOUR", "BOX_COLOUR"]  # the drawing helpers live in zoo.drawing


def save_grid(images: Sequence[np.ndarray], path: Path, columns: int | None = None) -> Path:
    """Tile same-size RGB images into one file."""
    if not images:
        raise ValueError("no images to save")
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    cols = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h:r * h + im.shape[0], c * w:c * w + im.shape[1]] = im
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


def plot_results(csv_path: Path, png_path: Path | None = None) -> Path:
    """One small panel per numeric column of ``results.csv`` (losses, metrics, lr) against epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{csv_path} has no rows")
    keys = [k for k in rows[0] if k not in ("epoch", "time", "skipped")]
    epochs = [int(r["epoch"]) for r in rows]
    cols = min(5, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        values = [float(r[key]) if r[key] not in ("", "nan") else np.nan for r in rows]
        ax.plot(epochs, values, marker="o", markersize=3, linewidth=1.5)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    out = png_path or csv_path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
