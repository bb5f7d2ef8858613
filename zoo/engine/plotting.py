"""Training plots: loss / metric curves from ``results.csv`` and prediction overlays on images."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["plot_results", "draw_boxes", "draw_label", "overlay_masks", "save_grid", "class_colour"]

MASK_COLOURS = (  # RGB, distinguishable on photos
    (30, 144, 255), (255, 99, 71), (50, 205, 50), (255, 215, 0), (186, 85, 211), (0, 206, 209),
)
POSITIVE_COLOUR, NEGATIVE_COLOUR, BOX_COLOUR = (0, 220, 0), (230, 0, 0), (255, 255, 0)


def class_colour(c: int) -> tuple[int, int, int]:
    """A stable, well-separated colour per class id (golden-angle hue steps)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((c * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, names: Sequence[str],
               scores: np.ndarray | None = None, masks: np.ndarray | None = None) -> np.ndarray:
    """Overlay boxes (x1, y1, x2, y2 pixels), class names, optional scores and (N, H, W) masks on an
    (H, W, 3) uint8 image; returns a new image."""
    canvas = image.astype(np.float32).copy()
    if masks is not None:
        for m, c in zip(masks, classes):
            canvas[m.astype(bool)] = canvas[m.astype(bool)] * 0.5 + np.array(class_colour(int(c))) * 0.5
    pil = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for i, (box, c) in enumerate(zip(boxes, classes)):
        colour = class_colour(int(c))
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=max(1, round(min(image.shape[:2]) / 200)))
        name = names[int(c)] if 0 <= int(c) < len(names) else str(int(c))
        text = name if scores is None else f"{name} {float(scores[i]):.2f}"
        tw = draw.textlength(text)
        ty = max(0.0, y1 - 11)
        draw.rectangle([x1, ty, x1 + tw + 2, ty + 11], fill=colour)
        draw.text((x1 + 1, ty), text, fill=(0, 0, 0))
    return np.asarray(pil)


def draw_label(image: np.ndarray, text: str, ok: bool | None = None) -> np.ndarray:
    """Write ``text`` on a strip above the image (green when ``ok``, red when not, grey otherwise)."""
    h, w = image.shape[:2]
    strip = 14
    out = Image.new("RGB", (w, h + strip), (40, 40, 40) if ok is None else ((20, 110, 20) if ok else (140, 20, 20)))
    out.paste(Image.fromarray(image), (0, strip))
    ImageDraw.Draw(out).text((2, 1), text, fill=(255, 255, 255))
    return np.asarray(out)


def overlay_masks(image: np.ndarray, masks: Sequence[np.ndarray], points: Sequence[tuple[float, float, int]] = (),
                  boxes: Sequence[tuple[float, float, float, float]] = (), alpha: float = 0.45) -> Image.Image:
    """Blend boolean ``(H, W)`` masks onto an ``(H, W, 3)`` uint8 image and draw the prompts."""
    out = image.astype(np.float32)
    for i, mask in enumerate(masks):
        colour = np.array(MASK_COLOURS[i % len(MASK_COLOURS)], dtype=np.float32)
        out[mask] = (1.0 - alpha) * out[mask] + alpha * colour
    canvas = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    radius = max(3, round(max(image.shape[:2]) / 150))
    width = max(2, radius // 2)
    for x1, y1, x2, y2 in boxes:
        draw.rectangle((x1, y1, x2, y2), outline=BOX_COLOUR, width=width)
    for x, y, label in points:
        fill = POSITIVE_COLOUR if label == 1 else NEGATIVE_COLOUR
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill, outline=(255, 255, 255))
    return canvas


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
