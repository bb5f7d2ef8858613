"""Counting and reporting data that had to be skipped (missing or corrupt images, bad label lines).

Bad items never stop a run: each is logged once on the ``zoo.data`` logger (the first
``max_messages`` of them individually, then only counted) and the totals go into the epoch summary.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["DataProblems", "LOG", "load_image", "verify_image", "IMAGE_SUFFIXES"]

LOG = logging.getLogger("zoo.data")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DataProblems:
    """Counts of skipped items by kind (``"missing image"``, ``"corrupt image"``, ``"bad label line"``...)."""

    def __init__(self, max_messages: int = 20) -> None:
        self.counts: Counter[str] = Counter()
        self.max_messages = max_messages
        self._logged = 0

    def report(self, kind: str, message: str) -> None:
        """Count one skipped item and warn about it (quietly once ``max_messages`` were shown)."""
        self.counts[kind] += 1
        if self._logged < self.max_messages:
            LOG.warning("skipped %s: %s", kind, message)
            self._logged += 1
            if self._logged == self.max_messages:
                LOG.warning("further skipped items are only counted")

    def merge(self, other: "DataProblems | Counter[str] | dict[str, int]") -> None:
        self.counts.update(other.counts if isinstance(other, DataProblems) else other)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """``"2 corrupt images, 1 bad label line"``; empty when nothing was skipped."""
        parts = []
        for kind, n in sorted(self.counts.items()):
            parts.append(f"{n} {kind}{'s' if n != 1 else ''}")
        return ", ".join(parts)


def verify_image(path: Path) -> tuple[int, int] | str:
    """``(height, width)`` of a readable image file, or a short reason it cannot be used.

    Only the header and (for PNG) the chunk checksums are checked, which is cheap; an image that
    still fails to decode later is replaced at load time and counted then.
    """
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:  # verify() leaves the file unusable; reopen for the size
            im = ImageOps.exif_transpose(im) if im.getexif() else im
            w, h = im.size
    except Exception as exc:  # PIL raises many types for broken files
        return f"unreadable ({type(exc).__name__}: {exc})"
    if w < 1 or h < 1:
        return "empty image"
    return h, w


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 RGB array, applying its EXIF orientation."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))
