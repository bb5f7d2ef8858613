"""Write the shapes dataset to disk in YOLO, COCO and ImageFolder layouts.

``OUT/yolo``: ``data.yaml``, ``images/{train,val}/*.png``, ``labels/{train,val}/*.txt`` (boxes).
``OUT/coco``: ``data.yaml``, ``images/{train,val}/*.png``, ``annotations/instances_{split}.json``
with boxes and compressed-RLE masks. ``OUT/crops``: ``{train,val}/<class>/*.png`` classification crops.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from zoo.data.class_folders import ShapesCropSource
from zoo.data.masks import rle_encode
from zoo.data.shapes import ShapesConfig, render_shapes

__all__ = ["write_yolo", "write_coco", "write_crops"]

SPLITS = ("train", "val")


def write_yolo(cfg: ShapesConfig, out: Path) -> Path:
    """Write a YOLO detection dataset; returns the path of its ``data.yaml``."""
    h, w = cfg.size
    for split in SPLITS:
        img_dir, lbl_dir = out / "images" / split, out / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for i in range(cfg.count(split)):
            s = render_shapes(cfg, split, i)
            Image.fromarray(s.image).save(img_dir / f"{i:06d}.png")
            lines = []
            for c, (x1, y1, x2, y2) in zip(s.cls.tolist(), s.boxes.tolist()):
                cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
                lines.append(f"{c} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
            (lbl_dir / f"{i:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    data = {"path": ".", "train": "images/train", "val": "images/val", "names": dict(enumerate(cfg.names))}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out / "data.yaml"


def write_coco(cfg: ShapesConfig, out: Path) -> Path:
    """Write COCO instance JSONs (category ids start at 1, as COCO's do); returns ``data.yaml``."""
    h, w = cfg.size
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(cfg.names)]
    for split in SPLITS:
        img_dir = out / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(cfg.count(split)):
            s = render_shapes(cfg, split, i)
            name = f"{i:06d}.png"
            Image.fromarray(s.image).save(img_dir / name)
            images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
            for c, box, mask in zip(s.cls.tolist(), s.boxes.tolist(), s.masks):
                x1, y1, x2, y2 = box
                annotations.append({
                    "id": len(annotations) + 1, "image_id": i + 1, "category_id": c + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(np.count_nonzero(mask)),
                    "iscrowd": 0, "segmentation": rle_encode(mask),
                })
        doc = {"images": images, "annotations": annotations, "categories": categories}
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    data = {split: {"annotations": f"annotations/instances_{split}.json", "images": f"images/{split}"}
            for split in SPLITS}
    (out / "data.yaml").write_text(yaml.safe_dump({"path": ".", **data}, sort_keys=False))
    return out / "data.yaml"


def write_crops(cfg: ShapesConfig, out: Path) -> Path:
    """Write classification crops as an ImageFolder tree; returns ``out``."""
    for split in SPLITS:
        source = ShapesCropSource(cfg, split)
        for name in source.names:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(len(source)):
            item = source.load(i)
            Image.fromarray(item.image).save(out / split / source.names[item.cls] / f"{i:06d}.png")
    return out
