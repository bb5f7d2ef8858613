"""Where detection / segmentation samples come from: the embedded shapes set, YOLO label folders
and COCO instance JSON.

A source knows its class ``names`` and returns raw :class:`Annotated` samples (original image size,
boxes in pixels); :class:`zoo.data.dataset.DetectionDataset` applies the transforms. Sources check
their files when they are built: a missing or unreadable image or a malformed label is skipped,
warned about and counted in ``problems``; a split with nothing usable raises :class:`DataError`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from zoo.data.masks import polygons_to_mask, segmentation_to_mask
from zoo.data.problems import IMAGE_SUFFIXES, DataProblems, load_image, verify_image
from zoo.data.shapes import ShapesConfig, render_shapes
from zoo.data.transforms import resize_masks
from zoo.errors import DataError

__all__ = ["Annotated", "DetectionSource", "ShapesSource", "YoloSource", "CocoSource", "list_images",
           "yolo_label_path"]


@dataclass
class Annotated:
    """One raw sample. ``image`` (H, W, 3) uint8 RGB; ``cls`` (N,) int64; ``boxes`` (N, 4) float32
    x1, y1, x2, y2 pixels; ``masks`` (N, H, W) bool when asked for and available, else ``None``."""

    image: np.ndarray
    cls: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray | None
    path: str


class DetectionSource(Protocol):
    names: list[str]
    problems: DataProblems
    has_masks: bool

    def __len__(self) -> int: ...

    def load(self, index: int, with_masks: bool = False) -> Annotated: ...


class ShapesSource:
    """The embedded shapes dataset, rendered on demand (see :mod:`zoo.data.shapes`)."""

    has_masks = True

    def __init__(self, cfg: ShapesConfig, split: str) -> None:
        self.cfg = cfg
        self.split = split
        self.names = list(cfg.names)
        self.problems = DataProblems()
        self._len = cfg.count(split)
        if self._len == 0:
            raise DataError(f"shapes: the {split} split is empty (n_{split}=0)")

    def __len__(self) -> int:
        return self._len

    def load(self, index: int, with_masks: bool = False) -> Annotated:
        s = render_shapes(self.cfg, self.split, index)
        return Annotated(s.image, s.cls, s.boxes, s.masks if with_masks else None,
                         f"shapes-{self.split}-{index:06d}")


def list_images(entry: Path | list[Path], problems: DataProblems | None = None) -> list[Path]:
    """Image files named by a split entry: a folder (searched recursively), a ``.txt`` list of
    image paths (relative to the list's folder), a single image, or a list of these."""
    if isinstance(entry, list):
        out: list[Path] = []
        for e in entry:
            out.extend(list_images(e, problems))
        return out
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if entry.suffix == ".txt" and entry.is_file():
        lines = [ln.strip() for ln in entry.read_text().splitlines() if ln.strip()]
        return [(entry.parent / ln) if not Path(ln).is_absolute() else Path(ln) for ln in lines]
    if entry.suffix.lower() in IMAGE_SUFFIXES and entry.exists():
        return [entry]
    raise DataError(f"'{entry}' is not an image folder, an image list (.txt) or an image")


def yolo_label_path(image: Path) -> Path:
    """YOLO convention: ``.../images/x/a.jpg`` -> ``.../labels/x/a.txt`` (last ``images`` folder)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


@dataclass
class _YoloRecord:
    image: Path
    cls: np.ndarray  # (N,)
    boxes: np.ndarray  # (N, 4) normalised x1, y1, x2, y2
    polygons: list[np.ndarray | None]  # per object: (K, 2) normalised polygon, or None (box label)


class YoloSource:
    """A YOLO-format split: images plus ``labels/*.txt`` with one object per line, either
    ``cls cx cy w h`` or a polygon ``cls x1 y1 x2 y2 ...`` (all coordinates normalised to 0..1).
    An image without a label file is a background image."""

    def __init__(self, images: list[Path], names: list[str], where: str = "") -> None:
        self.names = list(names)
        self.problems = DataProblems()
        self.records: list[_YoloRecord] = []
        for path in images:
            checked = verify_image(path)
            if isinstance(checked, str):
                self.problems.report("missing image" if checked == "missing" else "corrupt image",
                                     f"{path}: {checked}")
                continue
            self.records.append(self._read_labels(path))
        self.has_masks = any(p is not None for r in self.records for p in r.polygons)
        if not self.records:
            raise DataError(f"{where or 'YOLO dataset'}: no usable images"
                            + (f" ({self.problems.summary()})" if self.problems.total else ""))

    def _read_labels(self, image: Path) -> _YoloRecord:
        label = yolo_label_path(image)
        cls: list[int] = []
        boxes: list[list[float]] = []
        polys: list[np.ndarray | None] = []
        if label.is_file():
            for lineno, line in enumerate(label.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parsed = self._parse_line(line)
                if isinstance(parsed, str):
                    self.problems.report("bad label line", f"{label}:{lineno}: {parsed}")
                    continue
                c, box, poly = parsed
                cls.append(c)
                boxes.append(box)
                polys.append(poly)
        return _YoloRecord(image, np.array(cls, dtype=np.int64),
                           np.array(boxes, dtype=np.float32).reshape(-1, 4), polys)

    def _parse_line(self, line: str) -> tuple[int, list[float], np.ndarray | None] | str:
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            return f"not numbers: {line.strip()!r}"
        if not np.isfinite(values).all():
            return "non-finite value"
        c = values[0]
        if c != int(c) or not 0 <= c < len(self.names):
            return f"class {fields[0]} is not an integer in [0, {len(self.names)})"
        coords = np.array(values[1:], dtype=np.float64)
        if len(coords) == 4:
            cx, cy, w, h = coords
            if w <= 0 or h <= 0:
                return "box width/height must be > 0"
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            poly = None
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            poly = coords.reshape(-1, 2)
            box = [poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max(), poly[:, 1].max()]
            if box[2] <= box[0] or box[3] <= box[1]:
                return "degenerate polygon"
        else:
            return f"expected 5 values (cls cx cy w h) or a polygon, got {len(values)} values"
        if min(box) < -0.01 or max(box) > 1.01:
            return "coordinates must be normalised to [0, 1]"
        return int(c), list(np.clip(box, 0.0, 1.0)), poly

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int, with_masks: bool = False) -> Annotated:
        rec = self.records[index]
        image = load_image(rec.image)
        h, w = image.shape[:2]
        boxes = rec.boxes * np.array([w, h, w, h], dtype=np.float32)
        masks = None
        if with_masks:
            masks = np.zeros((len(rec.cls), h, w), dtype=bool)
            for i, poly in enumerate(rec.polygons):
                if poly is None:  # a box label: its mask is the box
                    x1, y1, x2, y2 = np.round(boxes[i]).astype(int)
                    masks[i, y1:y2, x1:x2] = True
                else:
                    masks[i] = polygons_to_mask([poly * np.array([w, h])], h, w)
        return Annotated(image, rec.cls.copy(), boxes, masks, str(rec.image))


class CocoSource:
    """COCO instance annotations: ``bbox`` as [x, y, w, h] pixels, ``segmentation`` as polygons or
    RLE. Category ids are mapped to contiguous class indices in ascending id order; crowd
    annotations are left out."""

    def __init__(self, annotations: Path, images_dir: Path, where: str = "") -> None:
        self.problems = DataProblems()
        where = where or str(annotations)
        if not annotations.is_file():
            raise DataError(f"{where}: annotation file '{annotations}' not found")
        try:
            doc = json.loads(annotations.read_text())
            cats = sorted(doc["categories"], key=lambda c: c["id"])
            images = doc["images"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{where}: not a COCO instances file ({type(exc).__name__}: {exc})") from None
        self.category_ids = [int(c["id"]) for c in cats]
        self.names = [str(c.get("name", c["id"])) for c in cats]
        cat_index = {cid: i for i, cid in enumerate(self.category_ids)}
        by_image: dict[int, list[dict]] = {}
        for ann in doc.get("annotations", []):
            by_image.setdefault(ann.get("image_id"), []).append(ann)

        self.records: list[tuple[Path, int, int, np.ndarray, np.ndarray, list]] = []
        self.image_ids: list[int] = []
        for im in images:
            path = images_dir / im["file_name"]
            checked = verify_image(path)
            if isinstance(checked, str):
                self.problems.report("missing image" if checked == "missing" else "corrupt image",
                                     f"{path}: {checked}")
                continue
            h, w = int(im.get("height", checked[0])), int(im.get("width", checked[1]))
            cls, boxes, segs = [], [], []
            for ann in by_image.get(im["id"], []):
                if ann.get("iscrowd", 0):
                    continue
                problem = self._check_annotation(ann, cat_index)
                if problem:
                    self.problems.report("bad annotation", f"{where}: annotation {ann.get('id')}: {problem}")
                    continue
                x, y, bw, bh = (float(v) for v in ann["bbox"])
                cls.append(cat_index[ann["category_id"]])
                boxes.append([x, y, x + bw, y + bh])
                segs.append(ann.get("segmentation"))
            self.records.append((path, h, w, np.array(cls, dtype=np.int64),
                                 np.array(boxes, dtype=np.float32).reshape(-1, 4), segs))
            self.image_ids.append(int(im["id"]))
        self.has_masks = any(s for r in self.records for s in r[5])
        if not self.records:
            raise DataError(f"{where}: no usable images in '{images_dir}'"
                            + (f" ({self.problems.summary()})" if self.problems.total else ""))

    @staticmethod
    def peek_names(annotations: Path, where: str) -> list[str]:
        """Class names of a COCO file (categories in ascending id order) without loading images."""
        try:
            doc = json.loads(annotations.read_text())
            return [str(c.get("name", c["id"])) for c in sorted(doc["categories"], key=lambda c: c["id"])]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{where}: not a COCO instances file ({type(exc).__name__}: {exc})") from None

    @staticmethod
    def _check_annotation(ann: dict, cat_index: dict[int, int]) -> str:
        if ann.get("category_id") not in cat_index:
            return f"unknown category_id {ann.get('category_id')}"
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            return "bbox must be [x, y, w, h]"
        try:
            _, _, bw, bh = (float(v) for v in bbox)
        except (TypeError, ValueError):
            return "bbox values must be numbers"
        if not (bw > 0 and bh > 0):
            return "bbox width/height must be > 0"
        return ""

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int, with_masks: bool = False) -> Annotated:
        path, h, w, cls, boxes, segs = self.records[index]
        image = load_image(path)
        ih, iw = image.shape[:2]
        scale = np.array([iw / w, ih / h, iw / w, ih / h], dtype=np.float32)
        masks = None
        if with_masks:
            masks = np.zeros((len(cls), ih, iw), dtype=bool)
            for i, seg in enumerate(segs):
                if seg:
                    m = segmentation_to_mask(seg, h, w)
                    masks[i] = resize_masks(m[None], iw, ih)[0]
                else:
                    x1, y1, x2, y2 = np.round(boxes[i] * scale).astype(int)
                    masks[i, y1:y2, x1:x2] = True
        return Annotated(image, cls.copy(), boxes * scale, masks, str(path))

