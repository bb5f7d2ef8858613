"""Instance-mask encodings used by COCO and YOLO-segment labels.

COCO run-length encoding (RLE) stores a binary mask in column-major (Fortran) order as
alternating run lengths, starting with a run of zeros. The "compressed" string form packs each
count (after the third, as a difference to the count two places back) into 5-bit groups, 6 bits
per character with a continuation flag, offset by ASCII 48. Written from the format description
in the COCO API docs; pycocotools is only used by the tests to cross-check.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "rle_decode", "rle_encode", "rle_counts_from_string", "rle_counts_to_string",
    "polygons_to_mask", "mask_to_box", "segmentation_to_mask",
]


def rle_counts_from_string(s: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string into run lengths."""
    data = s.encode("ascii") if isinstance(s, str) else bytes(s)
    counts: list[int] = []
    p = 0
    while p < len(data):
        value = 0
        shift = 0
        more = True
        while more:
            if p >= len(data):
                raise ValueError("truncated RLE string")
            c = data[p] - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if shift > 70:  # 14 groups already hold any 64-bit count; more is garbage, and slow to add up
                raise ValueError("RLE count too large")
            if not more and (c & 0x10):
                value |= -1 << shift  # sign-extend: the group's top bit was set
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_counts_to_string(counts: list[int] | np.ndarray) -> str:
    """Encode run lengths into COCO's compressed RLE string (inverse of :func:`rle_counts_from_string`)."""
    out = bytearray()
    counts = [int(c) for c in counts]
    for i, c in enumerate(counts):
        value = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            # Stop once the rest is pure sign: 0 for non-negative groups, -1 for negative ones.
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            out.append(group + 48)
    return out.decode("ascii")


def rle_decode(rle: dict) -> np.ndarray:
    """``{"size": [h, w], "counts": str | list[int]}`` -> (h, w) bool mask."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = rle_counts_from_string(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size and (counts < 0).any():
        raise ValueError("RLE has a negative run length")
    if counts.sum() != h * w:
        raise ValueError(f"RLE run lengths add up to {int(counts.sum())}, expected {h}*{w}={h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate zeros, ones, zeros, ...
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T  # column-major


def rle_encode(mask: np.ndarray, compress: bool = True) -> dict:
    """(h, w) bool mask -> COCO RLE dict (compressed string counts unless ``compress=False``)."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    flat = mask.T.reshape(-1)  # column-major
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs  # the first run always counts zeros
    if not flat.size:
        runs = []
    return {"size": [h, w], "counts": rle_counts_to_string(runs) if compress else runs}


def polygons_to_mask(polygons: list[list[float]] | list[np.ndarray], h: int, w: int) -> np.ndarray:
    """Fill COCO-style polygons (flat ``[x1, y1, x2, y2, ...]`` in pixels) into an (h, w) bool mask."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(pts) >= 3:
            draw.polygon([tuple(p) for p in pts.tolist()], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def segmentation_to_mask(segmentation: list | dict, h: int, w: int) -> np.ndarray:
    """A COCO annotation's ``segmentation`` (polygon list, RLE dict, or uncompressed RLE) -> bool mask."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, h, w)
    if isinstance(segmentation, dict):
        return rle_decode({"size": segmentation.get("size", [h, w]), "counts": segmentation["counts"]})
    raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Tight x1, y1, x2, y2 (exclusive right/bottom edge) around a bool mask; zeros when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return np.zeros(4, dtype=np.float32)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)
