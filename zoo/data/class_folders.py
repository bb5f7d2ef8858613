"""Classification data: ImageFolder trees and single-object crops of the shapes dataset.

ImageFolder: ``root/<split>/<class name>/*.jpg``; classes are the sorted sub-folder names.
Shapes crops: sample ``i`` is one object of shapes image ``i`` (chosen from the index), cut out
square with some surrounding context; its class is the object's shape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from zoo.data.problems import IMAGE_SUFFIXES, DataProblems, load_image, verify_image
from zoo.data.shapes import ShapesSplit, render_shapes
from zoo.data.transforms import center_crop_resize, colour_jitter, resize_image
from zoo.errors import DataError

__all__ = ["Labelled", "ClassificationSource", "ImageFolderSource", "ShapesCropSource", "ClassificationDataset",
           "ClassifyAugment", "collate_classification"]


@dataclass
class Labelled:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    cls: int
    path: str


class ClassificationSource(Protocol):
    names: list[str]
    problems: DataProblems

    def __len__(self) -> int: ...

    def load(self, index: int) -> Labelled: ...


class ImageFolderSource:
    """``root/<class>/<image>`` with classes in sorted folder-name order (``names`` may fix the order)."""

    def __init__(self, root: Path, names: list[str] | None = None) -> None:
        if not root.is_dir():
            raise DataError(f"image folder '{root}' not found")
        folders = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.names = list(names) if names else folders
        missing = [f for f in folders if f not in self.names]
        if missing:
            raise DataError(f"'{root}': class folders {missing} are not among the training classes {self.names}")
        self.problems = DataProblems()
        self.samples: list[tuple[Path, int]] = []
        for cls, name in enumerate(self.names):
            folder = root / name
            if not folder.is_dir():
                continue
            for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
                checked = verify_image(path)
                if isinstance(checked, str):
                    self.problems.report("corrupt image", f"{path}: {checked}")
                    continue
                self.samples.append((path, cls))
        if not self.samples:
            raise DataError(f"image folder '{root}' has no usable images in class sub-folders"
                            + (f" ({self.problems.summary()})" if self.problems.total else ""))

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Labelled:
        path, cls = self.samples[index]
        return Labelled(load_image(path), cls, str(path))


class ShapesCropSource(ShapesSplit):
    """One object per sample, cut from shapes image ``index`` with 20-60 % context around it."""

    label = "shapes crops"

    def load(self, index: int) -> Labelled:
        sample = render_shapes(self.cfg, self.split, index)
        rng = np.random.default_rng([self.cfg.seed, 7, index, self.split == "val"])
        if len(sample.cls) == 0:  # cannot happen with min_objects >= 1 unless every object was hidden
            return Labelled(sample.image, 0, f"shapes-crop-{self.split}-{index:06d}")
        k = int(rng.integers(0, len(sample.cls)))
        x1, y1, x2, y2 = sample.boxes[k]
        h, w = sample.image.shape[:2]
        side = min(max(x2 - x1, y2 - y1) * rng.uniform(1.2, 1.6), min(h, w))
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        left = int(np.clip(round(cx - side / 2), 0, w - side))
        top = int(np.clip(round(cy - side / 2), 0, h - side))
        s = int(round(side))
        crop = sample.image[top:top + s, left:left + s]
        return Labelled(np.ascontiguousarray(crop), int(sample.cls[k]), f"shapes-crop-{self.split}-{index:06d}")


@dataclass(frozen=True)
class ClassifyAugment:
    """Random-resized-crop area range and aspect jitter, flip probability and colour gains."""

    min_area: float = 0.6
    aspect: float = 4 / 3
    fliplr: float = 0.5
    hsv_h: float = 0.015
    hsv_s: float = 0.5
    hsv_v: float = 0.3


class ClassificationDataset(torch.utils.data.Dataset):
    """Items are dicts: ``img`` (3, S, S) uint8, ``cls`` int, ``path`` str, ``bad`` (1 when an unreadable
    image was replaced by the next one). Keys may be ``(index, seed)`` pairs from
    :class:`zoo.data.dataset.SeededSampler` so augmentation is reproducible."""

    def __init__(self, source: ClassificationSource, imgsz: int, augment: ClassifyAugment | None = None) -> None:
        self.source = source
        self.imgsz = int(imgsz)
        self.augment = augment
        self.names = source.names

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (int(key), None)
        rng = np.random.default_rng(seed)
        bad = 0
        for attempt in range(len(self.source)):
            try:
                item = self.source.load((index + attempt) % len(self.source))
                break
            except Exception as exc:  # an image that passed the header check but will not decode
                self.source.problems.report("corrupt image", f"{index + attempt}: {type(exc).__name__}: {exc}")
                bad += 1
        else:
            raise DataError("no image in the dataset could be decoded")
        image = self._transform(item.image, rng) if self.augment else center_crop_resize(item.image, self.imgsz)
        img = torch.from_numpy(np.require(image, requirements=("C", "W"))).permute(2, 0, 1).contiguous()
        return {"img": img, "cls": item.cls, "path": item.path, "bad": bad}

    def _transform(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        aug = self.augment
        assert aug is not None
        h, w = image.shape[:2]
        area = h * w * rng.uniform(aug.min_area, 1.0)
        ratio = math.exp(rng.uniform(-math.log(aug.aspect), math.log(aug.aspect)))
        cw = int(min(w, round(math.sqrt(area * ratio))))
        ch = int(min(h, round(math.sqrt(area / ratio))))
        x = int(rng.integers(0, w - cw + 1))
        y = int(rng.integers(0, h - ch + 1))
        image = resize_image(np.ascontiguousarray(image[y:y + ch, x:x + cw]), self.imgsz, self.imgsz)
        if rng.random() < aug.fliplr:
            image = image[:, ::-1]
        return colour_jitter(np.ascontiguousarray(image), rng, aug.hsv_h, aug.hsv_s, aug.hsv_v)


def collate_classification(batch: list[dict]) -> dict:
    """Stack items: ``img`` (B, 3, S, S) uint8, ``cls`` (B,) int64, ``paths``, ``bad`` total."""
    return {
        "img": torch.stack([b["img"] for b in batch]),
        "cls": torch.tensor([b["cls"] for b in batch], dtype=torch.int64),
        "paths": [b["path"] for b in batch],
        "bad": sum(b["bad"] for b in batch),
    }
