"""Pure drawing helpers on ``(H, W, 3)`` uint8 RGB arrays: boxes with labels, a caption strip, masks.

Shared by prediction results (:mod:`zoo.results`) and the training engine's plots
(:mod:`zoo.engine.plotting`, which re-exports these names); imports nothing from zoo.
"""
from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["MASK_COLOURS", "POSITIVE_COLOUR", "NEGATIVE_COLOUR", "BOX_COLOUR", "class_colour", "draw_boxes",
           "draw_label", "overlay_masks"]

MASK_COLOURS = (  # RGB, distinguishable on photos
    (30, 144, 255), (255, 99, 71), (50, 205, 50), (255, 215, 0), (186, 85, 211), (0, 206, 209),
)
POSITIVE_COLOUR, NEGATIVE_COLOUR, BOX_COLOUR = (0, 220, 0), (230, 0, 0), (255, 255, 0)


def class_colour(c: int) -> tuple[int, int, int]:
    """A stable, well-separated colour per class id (golden-angle hue steps)."""
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
