"""Checks on what annotation files say, made once when a source is built.

Annotation files come from other tools and people; anything in them can be the wrong type, missing,
non-finite or pointing outside the dataset. Each check here returns the value it vouches for or a
short reason (a ``str``) why the entry cannot be used, so the source can skip, warn and count the
entry at scan time instead of crashing, or failing later when a batch is built, where the failure
would be blamed on the image.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.masks import rle_counts_from_string

__all__ = ["as_int", "short", "read_label_text", "inside_root", "check_image_size", "check_bbox", "check_segmentation",
           "MAX_LABEL_BYTES"]

# A YOLO label file holds a few lines per object; a file this big is not one (a mis-pointed folder, a
# binary), and reading it whole into memory would only be a way to run out of it.
MAX_LABEL_BYTES = 8 * 2**20
# Pixel coordinates are compared and stored as float32; beyond this no decodable image has pixels,
# and arithmetic on such values overflows to inf further down.
MAX_COORD = 1e8
# COCO's height/width are the frame its coordinates are in. Masks are drawn at that size and then
# resized to the decoded image, so a size far from the image's is either a wrong entry or (like
# "height": 10**9) a way to allocate a canvas that cannot fit in memory.
MAX_SIZE_RATIO = 8


def short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value from a file, cut short: a warning must stay one readable line."""
    text = repr(value) if not isinstance(value, BaseException) else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def as_int(value: Any) -> int | None:
    """An integer from JSON / YAML: an int (not a bool), an integral float or a decimal string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:  # also raised for strings over Python's digit limit
            return None
    return None


def read_label_text(path: Path) -> tuple[str | None, str]:
    """``(text, "")`` of a UTF-8 label file, or ``(None, reason)`` when it cannot be read as text."""
    try:
        size = path.stat().st_size
        if size > MAX_LABEL_BYTES:
            return None, f"{size} bytes, more than a label file's limit of {MAX_LABEL_BYTES}"
        data = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or type(exc).__name__})"
    try:
        return data.decode("utf-8-sig"), ""  # -sig: editors on Windows may start the file with a BOM
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (invalid byte {data[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"


def inside_root(root: Path, name: Any) -> tuple[Path | None, str, str]:
    """``(root / name, "", "")`` when ``name`` is a relative path that stays inside ``root``, else
    ``(None, kind, reason)``. The check is on the path as written (``..`` and absolute paths), not on
    the resolved one, so a dataset may still symlink its image folders elsewhere on purpose."""
    if not isinstance(name, str) or not name.strip():
        return None, "bad image entry", f"file_name must be a non-empty string, got {short(name)}"
    if "\x00" in name:
        return None, "bad image entry", "file_name contains a NUL character"
    rel = Path(name)
    norm = os.path.normpath(name)
    if rel.anchor or rel.drive or os.path.isabs(norm) or norm == os.pardir or norm.startswith(os.pardir + os.sep):
        return None, "image outside dataset root", f"file_name {short(name, 120)} points outside '{root}'; use a path relative to it"
    return root / norm, "", ""


def check_image_size(entry: dict, actual: tuple[int, int]) -> tuple[int, int] | str:
    """The ``(height, width)`` a COCO image entry declares (the decoded size when it declares none)."""
    sides = []
    for key, real in (("height", actual[0]), ("width", actual[1])):
        if key not in entry:
            sides.append(real)
            continue
        value = as_int(entry[key])
        if value is None or value < 1:
            return f"{key} must be a positive integer, got {short(entry[key])}"
        sides.append(value)
    h, w = sides

    def close(a: int, b: int) -> bool:
        return a <= b * MAX_SIZE_RATIO and b <= a * MAX_SIZE_RATIO

    ih, iw = actual  # either orientation: the decoded size has EXIF rotation applied, the JSON may not
    if not ((close(h, ih) and close(w, iw)) or (close(h, iw) and close(w, ih))):
        return (f"height/width {h}x{w} are far from the image's own size {ih}x{iw}; "
                "fix them or leave them out")
    return h, w


def _finite_numbers(values: Any) -> np.ndarray | None:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # strings, nested lists, ints beyond float range
        return None
    if arr.ndim != 1 or not np.isfinite(arr).all() or (np.abs(arr) > MAX_COORD).any():
        return None
    return arr


def check_bbox(bbox: Any) -> np.ndarray | str:
    """A COCO ``[x, y, w, h]`` as float32 ``x1, y1, x2, y2``, or why it is unusable."""
    if not isinstance(bbox, list) or len(bbox) != 4 or any(isinstance(v, (bool, str)) for v in bbox):
        return "bbox must be [x, y, w, h] numbers"
    arr = _finite_numbers(bbox)
    if arr is None:
        return f"bbox values must be finite numbers within +-{MAX_COORD:g}, got {short(bbox)}"
    x, y, bw, bh = arr.tolist()
    if not (bw > 0 and bh > 0):
        return "bbox width/height must be > 0"
    return np.array([x, y, x + bw, y + bh], dtype=np.float32)


def check_segmentation(seg: Any, h: int, w: int) -> str:
    """Why a COCO ``segmentation`` cannot be drawn on an ``h`` x ``w`` frame ("" when it can, or when
    there is none and the box stands in for the mask)."""
    if seg is None or (isinstance(seg, list) and not seg):
        return ""
    if isinstance(seg, list):
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "each polygon must be a list of at least 3 x, y pairs"
            if any(isinstance(v, (bool, str)) for v in poly):
                return "polygon coordinates must be numbers"
            pts = _finite_numbers(poly)
            if pts is None:
                return "polygon coordinates must be finite numbers"
            xs, ys = pts[0::2], pts[1::2]
            # Vertices far outside the frame draw nothing sensible (the fill is clipped to the
            # canvas), so they are a broken annotation rather than a loose one.
            if xs.min() < -w or xs.max() > 2 * w or ys.min() < -h or ys.max() > 2 * h:
                return f"polygon lies far outside the {h}x{w} image"
        return ""
    if isinstance(seg, dict):
        size = seg.get("size", [h, w])
        if not isinstance(size, list) or [as_int(v) for v in size] != [h, w]:
            return f"RLE size must be the image's [height, width] = [{h}, {w}], got {short(size)}"
        counts = seg.get("counts")
        if isinstance(counts, str):
            try:
                counts = rle_counts_from_string(counts)
            except ValueError as exc:
                return f"RLE counts string is malformed ({exc})"
        if not isinstance(counts, list) or any(as_int(c) is None or isinstance(c, (str, float)) for c in counts):
            return "RLE counts must be a string or a list of integers"
        if any(c < 0 for c in counts) or sum(counts) != h * w:
            return f"RLE run lengths must be >= 0 and add up to {h}*{w}"
        return ""
    return f"must be a polygon list or an RLE dict, got {type(seg).__name__}"
