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
           "draw_label", "draw_legend", "side_by_side", "overlay_masks"]

MASK_COLOURS = (  # RGB, distinguishable on photos
    (30, 144, 255), (255, 99, 71), (50, 205, 50), (255, 215, 0), (186, 85, 211), (0, 206, 209),
)
POSITIVE_COLOUR, NEGATIVE_COLOUR, BOX_COLOUR = (0, 220, 0), (230, 0, 0), (255, 255, 0)


def class_colour(c: int) -> tuple[int, int, int]:
    """A stable, well-separated colour per class id (golden-angle hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((c * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, names: Sequence[str],
               scores: np.ndarray | None = None, masks: np.ndarray | None = None,
               min_label_size: float = 0.0) -> np.ndarray:
    """Overlay boxes (x1, y1, x2, y2 pixels), class names, optional scores and (N, H, W) masks on an
    (H, W, 3) uint8 image; returns a new image.

    With ``min_label_size`` > 0 a box gets its text only when its shorter side is at least that many
    pixels and the text would not cover an earlier box's text (boxes are labelled in the given order,
    so pass them best first); the box colour still tells the class (see :func:`draw_legend`).
    """
    canvas = image.astype(np.float32).copy()
    if masks is not None:
        for m, c in zip(masks, classes):
            canvas[m.astype(bool)] = canvas[m.astype(bool)] * 0.5 + np.array(class_colour(int(c))) * 0.5
    pil = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    taken: list[tuple[float, float, float, float]] = []
    for i, (box, c) in enumerate(zip(boxes, classes)):
        colour = class_colour(int(c))
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=max(1, round(min(image.shape[:2]) / 200)))
        name = names[int(c)] if 0 <= int(c) < len(names) else str(int(c))
        text = name if scores is None else f"{name} {float(scores[i]):.2f}"
        tw = draw.textlength(text)
        ty = max(0.0, y1 - 11)
        rect = (x1, ty, x1 + tw + 2, ty + 11)
        if min_label_size > 0:
            if min(x2 - x1, y2 - y1) < min_label_size or any(_overlap(rect, r) for r in taken):
                continue
            taken.append(rect)
        draw.rectangle(list(rect), fill=colour)
        draw.text((x1 + 1, ty), text, fill=(0, 0, 0))
    return np.asarray(pil)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_legend(width: int, classes: Sequence[int], names: Sequence[str]) -> np.ndarray:
    """A white strip ``width`` pixels wide with a colour swatch and name per class, wrapped to rows."""
    entries = []
    for c in dict.fromkeys(int(c) for c in classes):
        entries.append((c, names[c] if 0 <= c < len(names) else str(c)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows, row, x = [], [], 4.0
    for c, name in entries:
        w = 14 + probe.textlength(name) + 10
        if row and x + w > width:
            rows.append(row)
            row, x = [], 4.0
        row.append((x, c, name))
        x += w
    if row:
        rows.append(row)
    out = Image.new("RGB", (width, 16 * max(1, len(rows)) + 2), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for r, items in enumerate(rows):
        y = 2 + 16 * r
        for x, c, name in items:
            draw.rectangle([x, y + 1, x + 10, y + 11], fill=class_colour(c))
            draw.text((x + 14, y), name, fill=(0, 0, 0))
    return np.asarray(out)


def side_by_side(panels: Sequence[np.ndarray], titles: Sequence[str], gap: int = 4) -> np.ndarray:
    """Panels (same height after their title strip) next to each other, each captioned."""
    captioned = [draw_label(p, t) for p, t in zip(panels, titles)]
    h = max(p.shape[0] for p in captioned)
    w = sum(p.shape[1] for p in captioned) + gap * (len(captioned) - 1)
    out = np.full((h, w, 3), 255, np.uint8)
    x = 0
    for p in captioned:
        out[:p.shape[0], x:x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


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
