"""Training plots: loss / metric curves from ``results.csv`` and prediction overlays on images."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from zoo.drawing import (BOX_COLOUR, MASK_COLOURS, NEGATIVE_COLOUR, POSITIVE_COLOUR, class_colour, draw_boxes,
                         draw_label, draw_legend, overlay_masks, side_by_side)

__all__ = ["grid_width", "plot_results", "results_figure", "plot_confusion_matrix", "plot_pr_curve", "draw_boxes", "draw_label",
           "draw_legend", "side_by_side", "overlay_masks", "save_grid", "class_colour", "MASK_COLOURS",
           "POSITIVE_COLOUR", "NEGATIVE_COLOUR", "BOX_COLOUR"]  # the drawing helpers live in zoo.drawing


def grid_width(images: Sequence[np.ndarray], columns: int | None = None) -> int:
    """Pixel width of the :func:`save_grid` tiling of ``images``."""
    cols = columns or math.ceil(math.sqrt(len(images)))
    return cols * max(im.shape[1] for im in images) if images else 0


def save_grid(images: Sequence[np.ndarray], path: Path, columns: int | None = None,
              footer: np.ndarray | None = None) -> Path:
    """Tile RGB images into one file (white where sizes differ), with an optional full-width ``footer``
    strip (e.g. a legend from :func:`draw_legend`, drawn ``grid width`` wide) below."""
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
    if footer is not None:
        pad = np.full((footer.shape[0], grid.shape[1], 3), 255, np.uint8)
        pad[:, :min(footer.shape[1], grid.shape[1])] = footer[:, :grid.shape[1]]
        grid = np.concatenate([grid, pad], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def results_figure(csv_path: Path):
    """The ``results.csv`` figure: one small panel per numeric column against epoch (integer ticks)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{csv_path} has no rows")
    keys = [k for k in rows[0] if k not in ("epoch", "time", "skipped")]
    epochs = [int(r["epoch"]) for r in rows]
    cols = max(1, min(5, len(keys)))
    nrows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        values = [float(r[key]) if r[key] not in ("", "nan") else np.nan for r in rows]
        ax.plot(epochs, values, marker="o", markersize=3, linewidth=1.5)
        ax.set_title(key, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_results(csv_path: Path, png_path: Path | None = None) -> Path:
    """One small panel per numeric column of ``results.csv`` (losses, metrics, lr) against epoch."""
    fig = results_figure(csv_path)
    out = png_path or csv_path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    _pyplot().close(fig)
    return out


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: Path, conf: float = 0.25,
                          iou: float = 0.5) -> Path:
    """``matrix[true, predicted]`` over the classes plus background, as counts and column shading by
    the share of each true class (so rare classes stay visible)."""
    plt = _pyplot()
    labels = [*names, "background"]
    n = len(labels)
    totals = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, float), where=totals > 0)
    size = min(14.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for (r, c), v in np.ndenumerate(matrix):
            if v:
                ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=7,
                        color="white" if share[r, c] > 0.5 else "black")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (conf {conf:g}, IoU {iou:g}); shade: share of the true row", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pr_curve(recall: np.ndarray, precision: np.ndarray, names: Sequence[str], path: Path,
                  iou: float = 0.5) -> Path:
    """Precision against recall per class (``precision`` (nc, R), NaN rows skipped) and their mean."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    has = ~np.isnan(precision).all(1)
    show_names = has.sum() <= 12
    for c in np.flatnonzero(has):
        ap = float(precision[c].mean())
        ax.plot(recall, precision[c], linewidth=1, color=np.array(class_colour(int(c))) / 255,
                label=f"{names[c] if c < len(names) else c} {ap:.3f}" if show_names else None)
    if has.any():
        mean = precision[has].mean(0)
        ax.plot(recall, mean, linewidth=3, color="blue", label=f"all classes mAP{round(iou * 100)} {mean.mean():.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"precision-recall at IoU {iou:g}", fontsize=10)
    ax.grid(alpha=0.3)
    if has.any():
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
