"""Image + label transforms on numpy arrays: letterbox / resize, random scale-and-place, flips and
colour jitter.

A sample is an RGB ``(H, W, 3)`` uint8 image with ``boxes`` (N, 4) x1, y1, x2, y2 in pixels and
optionally ``masks`` (N, H, W) bool; every geometric transform moves all three together. Random
choices come from a ``numpy.random.Generator`` handed in by the caller, so augmentation is
reproducible from a seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["AugmentConfig", "Placement", "letterbox", "flip_horizontal", "flip_vertical", "colour_jitter",
           "resize_image", "resize_masks", "center_crop_resize"]

PAD_VALUE = 114  # grey padding, as the YOLO family uses, so padded borders look like "nothing"


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation strengths (zero disables one). ``scale``: random zoom in
    ``[1 - scale, 1 + scale]`` around the letterbox fit, placed at a random offset; ``hsv_*``:
    colour gains as in the YOLO recipes (hue as a fraction of a full turn)."""

    fliplr: float = 0.5
    flipud: float = 0.0
    scale: float = 0.3
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4


@dataclass(frozen=True)
class Placement:
    """Where the original image went: ``new = old * ratio + (pad_x, pad_y)``."""

    ratio: float
    pad_x: float
    pad_y: float


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of an (H, W, C) uint8 image."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    resample = Image.BILINEAR if width * height >= image.shape[0] * image.shape[1] else Image.BOX
    return np.asarray(Image.fromarray(image).resize((width, height), resample))


def resize_masks(masks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of (N, H, W) masks, sampling at pixel centres."""
    n, h, w = masks.shape
    if (h, w) == (height, width):
        return masks
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return masks[:, rows][:, :, cols]


def _paste(canvas: np.ndarray, src: np.ndarray, x: int, y: int, stacked: bool = False) -> None:
    """Copy ``src`` into ``canvas`` with its top-left at (x, y), clipping what falls outside.
    Arrays are (H, W, C) images, or (N, H, W) mask stacks when ``stacked``."""
    ch, cw = canvas.shape[1:3] if stacked else canvas.shape[:2]
    sh, sw = src.shape[1:3] if stacked else src.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + sw, cw), min(y + sh, ch)
    if x1 <= x0 or y1 <= y0:
        return
    if stacked:
        canvas[:, y0:y1, x0:x1] = src[:, y0 - y:y1 - y, x0 - x:x1 - x]
    else:
        canvas[y0:y1, x0:x1] = src[y0 - y:y1 - y, x0 - x:x1 - x]


def letterbox(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None, size: int,
              rng: np.random.Generator | None = None, scale: float = 0.0,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Placement, np.ndarray]:
    """Fit the image into a ``size`` x ``size`` canvas keeping its aspect ratio, padding with grey.

    Without ``rng`` the image is centred (validation). With ``rng`` and ``scale > 0`` the fit is
    zoomed by a random factor in ``[1 - scale, 1 + scale]`` and placed at a random offset (zoomed-in
    images are cropped). Boxes are shifted, clipped to the canvas, and dropped when less than a
    quarter of them (or fewer than 2 pixels a side) is left. Returns the new image, boxes, masks,
    the placement, and the indices of the kept boxes.
    """
    h, w = image.shape[:2]
    ratio = min(size / h, size / w)
    if rng is not None and scale > 0:
        ratio *= rng.uniform(1 - scale, 1 + scale)
    new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
    if rng is not None and scale > 0:
        x = int(rng.integers(min(0, size - new_w), max(0, size - new_w) + 1))
        y = int(rng.integers(min(0, size - new_h), max(0, size - new_h) + 1))
    else:
        x, y = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.full((size, size, image.shape[2]), PAD_VALUE, dtype=np.uint8)
    _paste(canvas, resize_image(image, new_w, new_h), x, y)
    sx, sy = new_w / w, new_h / h

    new_boxes = boxes.astype(np.float32).copy()
    new_boxes[:, [0, 2]] = new_boxes[:, [0, 2]] * sx + x
    new_boxes[:, [1, 3]] = new_boxes[:, [1, 3]] * sy + y
    before = (new_boxes[:, 2] - new_boxes[:, 0]) * (new_boxes[:, 3] - new_boxes[:, 1])
    new_boxes = np.clip(new_boxes, 0, size)
    bw, bh = new_boxes[:, 2] - new_boxes[:, 0], new_boxes[:, 3] - new_boxes[:, 1]
    keep = np.flatnonzero((bw >= 2) & (bh >= 2) & (bw * bh >= 0.25 * np.maximum(before, 1e-6)))
    new_boxes = new_boxes[keep]

    new_masks = None
    if masks is not None:
        new_masks = np.zeros((len(keep), size, size), dtype=bool)
        if len(keep):
            _paste(new_masks, resize_masks(masks[keep], new_w, new_h), x, y, stacked=True)
    return canvas, new_boxes, new_masks, Placement(ratio=float(sx), pad_x=float(x), pad_y=float(y)), keep


def flip_horizontal(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    w = image.shape[1]
    boxes = boxes.copy()
    boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    return image[:, ::-1].copy(), boxes, None if masks is None else masks[:, :, ::-1].copy()


def flip_vertical(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    h = image.shape[0]
    boxes = boxes.copy()
    boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    return image[::-1].copy(), boxes, None if masks is None else masks[:, ::-1].copy()


def colour_jitter(image: np.ndarray, rng: np.random.Generator, hue: float, saturation: float,
                  value: float) -> np.ndarray:
    """Random hue rotation (fraction of a turn, at most ``hue``), saturation and brightness gains
    in ``[1 - g, 1 + g]``. Hue is rotated in YIQ space, which avoids an HSV round trip."""
    if hue <= 0 and saturation <= 0 and value <= 0:
        return image
    img = image.astype(np.float32)
    if hue > 0:
        theta = rng.uniform(-hue, hue) * 2 * math.pi
        to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
        c, s = math.cos(theta), math.sin(theta)
        rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
        img = img @ (np.linalg.inv(to_yiq) @ rot @ to_yiq).T
    if saturation > 0:
        gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
        img = gray[..., None] + (img - gray[..., None]) * rng.uniform(1 - saturation, 1 + saturation)
    if value > 0:
        img = img * rng.uniform(1 - value, 1 + value)
    return np.clip(img, 0, 255).astype(np.uint8)


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` and take the central ``size`` x ``size`` crop."""
    h, w = image.shape[:2]
    r = size / min(h, w)
    nw, nh = max(size, round(w * r)), max(size, round(h * r))
    image = resize_image(image, nw, nh)
    x, y = (nw - size) // 2, (nh - size) // 2
    return image[y:y + size, x:x + size]
