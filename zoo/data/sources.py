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

from zoo.data.checks import (as_int, check_bbox, check_image_size, check_segmentation, inside_root,
                             read_label_text, short)
from zoo.data.masks import polygons_to_mask, segmentation_to_mask
from zoo.data.problems import IMAGE_SUFFIXES, DataProblems, load_image, verify_image
from zoo.data.shapes import ShapesSplit, render_shapes
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


class ShapesSource(ShapesSplit):
    """The embedded shapes dataset, rendered on demand (see :mod:`zoo.data.shapes`)."""

    has_masks = True

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
        text, why = read_label_text(entry)  # same limits as a label file: a list is small UTF-8 text
        if text is None:
            raise DataError(f"image list '{entry}': {why}")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
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
    An image without a label file is a background image; one whose label file cannot be read as
    text, or that shares its label file with another image, is skipped."""

    def __init__(self, images: list[Path], names: list[str], where: str = "") -> None:
        self.names = list(names)
        self.problems = DataProblems()
        self.records: list[_YoloRecord] = []
        shared = self._shared_labels(images)
        for path in images:
            if path in shared:
                others = ", ".join(str(o) for o in shared[path])
                self.problems.report("duplicate label file", f"{path}: its label file {yolo_label_path(path)} "
                                     f"also belongs to {others}; rename one of the images")
                continue
            checked = verify_image(path)
            if isinstance(checked, str):
                self.problems.report("missing image" if checked == "missing" else "corrupt image",
                                     f"{path}: {checked}")
                continue
            record = self._read_labels(path)
            if record is not None:
                self.records.append(record)
        self.has_masks = any(p is not None for r in self.records for p in r.polygons)
        if not self.records:
            raise DataError(f"{where or 'YOLO dataset'}: no usable images"
                            + (f" ({self.problems.summary()})" if self.problems.total else ""))

    @staticmethod
    def _shared_labels(images: list[Path]) -> dict[Path, list[Path]]:
        """Images whose existing label file is also another image's (``a.png`` and ``a.jpg`` both map to
        ``labels/a.txt``), each with the others. Which image the labels were drawn on cannot be told,
        so none of them is used. The same path listed twice is one image, not a clash."""
        by_label: dict[Path, list[Path]] = {}
        for path in dict.fromkeys(images):
            by_label.setdefault(yolo_label_path(path), []).append(path)
        out: dict[Path, list[Path]] = {}
        for label, paths in by_label.items():
            if len(paths) > 1 and label.is_file():
                for p in paths:
                    out[p] = [o for o in paths if o != p]
        return out

    def _read_labels(self, image: Path) -> _YoloRecord | None:
        label = yolo_label_path(image)
        cls: list[int] = []
        boxes: list[list[float]] = []
        polys: list[np.ndarray | None] = []
        if label.is_file():
            text, why = read_label_text(label)
            if text is None:  # the image's objects are unknown: training on it as background would be wrong
                self.problems.report("bad label file", f"{label}: {why}")
                return None
            for lineno, line in enumerate(text.splitlines(), 1):
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
            return f"not numbers: {short(line.strip())}"
        if not np.isfinite(values).all():
            return "non-finite value"
        c = values[0]
        if c != int(c) or not 0 <= c < len(self.names):
            return f"class {short(fields[0], 20)} is not an integer in [0, {len(self.names)})"
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


def _read_coco(annotations: Path, where: str) -> dict:
    try:
        doc = json.loads(annotations.read_bytes())  # bytes: json detects UTF-8/16/32 and a BOM itself
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise DataError(f"{where}: not a COCO instances file ({type(exc).__name__}: {short(exc)})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{where}: not a COCO instances file (expected a JSON object with 'images' and 'categories')")
    return doc


def _categories(doc: dict, where: str) -> tuple[list[int], list[str]]:
    """Category ids in ascending order and their names. The categories are the model's classes, so a
    broken one is an error to fix rather than an item to skip."""
    cats = doc.get("categories")
    if not isinstance(cats, list) or not cats:
        raise DataError(f"{where}: 'categories' must be a non-empty list of {{\"id\": int, \"name\": str}} objects")
    by_id: dict[int, str] = {}
    for k, c in enumerate(cats):
        cid = as_int(c.get("id")) if isinstance(c, dict) else None
        if cid is None:
            raise DataError(f"{where}: categories[{k}]: 'id' must be an integer, got {short(c)}")
        if cid in by_id:
            raise DataError(f"{where}: categories[{k}]: category id {cid} is used twice; ids must be unique")
        by_id[cid] = str(c.get("name", cid))
    ids = sorted(by_id)
    return ids, [by_id[i] for i in ids]


class CocoSource:
    """COCO instance annotations: ``bbox`` as [x, y, w, h] pixels, ``segmentation`` as polygons or
    RLE. Category ids are mapped to contiguous class indices in ascending id order; crowd
    annotations are left out. Image entries must name files inside ``images_dir``; a bad image entry
    or annotation is skipped, warned about and counted (see :mod:`zoo.data.checks`)."""

    def __init__(self, annotations: Path, images_dir: Path, where: str = "") -> None:
        self.problems = DataProblems()
        where = where or str(annotations)
        if not annotations.is_file():
            raise DataError(f"{where}: annotation file '{annotations}' not found")
        doc = _read_coco(annotations, where)
        self.category_ids, self.names = _categories(doc, where)
        images, anns = doc.get("images"), doc.get("annotations", [])
        for key, value in (("images", images), ("annotations", anns)):
            if not isinstance(value, list):
                raise DataError(f"{where}: '{key}' must be a list, got {type(value).__name__}")
        cat_index = {cid: i for i, cid in enumerate(self.category_ids)}
        by_image: dict[int, list[dict]] = {}
        for k, ann in enumerate(anns):
            image_id = as_int(ann.get("image_id")) if isinstance(ann, dict) else None
            if image_id is None:
                why = f"image_id must be an integer, got {short(ann.get('image_id'))}" if isinstance(ann, dict) \
                    else "not a JSON object"
                self.problems.report("bad annotation", f"{where}: annotations[{k}]: {why}")
                continue
            by_image.setdefault(image_id, []).append(ann)

        self.records: list[tuple[Path, int, int, np.ndarray, np.ndarray, list]] = []
        self.image_ids: list[int] = []
        self._seen_ids: set[int] = set()  # a repeated id would get the first image's annotations too
        for k, im in enumerate(images):
            entry = self._image_entry(im, images_dir, f"{where}: images[{k}]")
            if entry is None:
                continue
            image_id, path, h, w = entry
            cls, boxes, segs = [], [], []
            for ann in by_image.get(image_id, []):
                if ann.get("iscrowd", 0):
                    continue
                checked = self._check_annotation(ann, cat_index, h, w)
                if isinstance(checked, str):
                    self.problems.report("bad annotation", f"{where}: annotation {short(ann.get('id'))}: {checked}")
                    continue
                cls.append(checked[0])
                boxes.append(checked[1])
                segs.append(ann.get("segmentation"))
            self.records.append((path, h, w, np.array(cls, dtype=np.int64),
                                 np.array(boxes, dtype=np.float32).reshape(-1, 4), segs))
            self.image_ids.append(image_id)
        self.has_masks = any(s for r in self.records for s in r[5])
        if not self.records:
            raise DataError(f"{where}: no usable images in '{images_dir}'"
                            + (f" ({self.problems.summary()})" if self.problems.total else ""))

    def _image_entry(self, im: object, images_dir: Path, label: str) -> tuple[int, Path, int, int] | None:
        """``(id, path, height, width)`` of a usable image entry; otherwise reported and ``None``."""
        if not isinstance(im, dict):
            self.problems.report("bad image entry", f"{label}: not a JSON object")
            return None
        image_id = as_int(im.get("id"))
        if image_id is None or image_id in self._seen_ids:
            why = (f"id {image_id} is used by an earlier image; ids must be unique" if image_id is not None
                   else f"id must be an integer, got {short(im.get('id'))}")
            self.problems.report("bad image entry", f"{label}: {why}")
            return None
        path, kind, why = inside_root(images_dir, im.get("file_name"))
        if path is None:
            self.problems.report(kind, f"{label}: {why}")
            return None
        checked = verify_image(path)
        if isinstance(checked, str):
            self.problems.report("missing image" if checked == "missing" else "corrupt image", f"{path}: {checked}")
            return None
        size = check_image_size(im, checked)
        if isinstance(size, str):
            self.problems.report("bad image entry", f"{label} ({im['file_name']}): {size}")
            return None
        self._seen_ids.add(image_id)
        return image_id, path, size[0], size[1]

    @staticmethod
    def peek_names(annotations: Path, where: str) -> list[str]:
        """Class names of a COCO file (categories in ascending id order) without loading images."""
        return _categories(_read_coco(annotations, where), where)[1]

    @staticmethod
    def _check_annotation(ann: dict, cat_index: dict[int, int], h: int, w: int) -> tuple[int, np.ndarray] | str:
        """``(class index, x1 y1 x2 y2 box)`` of a usable annotation on an ``h`` x ``w`` image, or why not."""
        cid = as_int(ann.get("category_id"))
        if cid not in cat_index:
            return f"unknown category_id {short(ann.get('category_id'))}"
        box = check_bbox(ann.get("bbox"))
        if isinstance(box, str):
            return box
        why = check_segmentation(ann.get("segmentation"), h, w)
        return f"segmentation: {why}" if why else (cat_index[cid], box)

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
                if isinstance(seg, list) and seg:
                    # Polygons are scaled into the decoded image and drawn there, so a JSON frame
                    # bigger than the image never needs a canvas of its size.
                    xy = np.array([iw / w, ih / h])
                    masks[i] = polygons_to_mask([np.asarray(p, np.float64).reshape(-1, 2) * xy for p in seg], ih, iw)
                elif seg:
                    m = segmentation_to_mask(seg, h, w)  # RLE: its size is the JSON frame (checked at scan)
                    masks[i] = resize_masks(m[None], iw, ih)[0]
                else:
                    # Clipped first: a box may reach past the image, and rounding far-off floats
                    # to int would overflow.
                    x1, y1, x2, y2 = np.round(np.clip(boxes[i] * scale, 0, [iw, ih, iw, ih])).astype(int)
                    masks[i, y1:y2, x1:x2] = True
        return Annotated(image, cls.copy(), boxes * scale, masks, str(path))

