"""YOLO / COCO / ImageFolder readers on a written shapes dataset, bad data, and --data errors."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from zoo.data.export import write_coco, write_crops, write_yolo
from zoo.data.shapes import ShapesConfig, render_shapes
from zoo.data.spec import resolve_data
from zoo.errors import DataError

CFG = ShapesConfig(seed=2, n_train=6, n_val=3, size=(64, 80))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    write_yolo(CFG, out / "yolo")
    write_coco(CFG, out / "coco")
    write_crops(CFG, out / "crops")
    return out


def test_yolo_and_coco_read_back_what_was_rendered(written: Path) -> None:
    for data in (written / "yolo" / "data.yaml", written / "coco"):
        spec = resolve_data(str(data), "detect", 64)
        assert spec.names == list(CFG.names)
        src = spec.detection_source("val")
        assert len(src) == CFG.n_val and src.problems.total == 0
        for i in range(CFG.n_val):
            truth = render_shapes(CFG, "val", i)
            got = src.load(i, with_masks=True)
            np.testing.assert_array_equal(got.image, truth.image)  # PNG is lossless
            np.testing.assert_array_equal(got.cls, truth.cls)
            np.testing.assert_allclose(got.boxes, truth.boxes, atol=1e-3)
            if spec.kind == "coco":
                np.testing.assert_array_equal(got.masks, truth.masks)


def test_imagefolder_crops(written: Path) -> None:
    spec = resolve_data(str(written / "crops"), "classify", 32)
    assert spec.kind == "imagefolder" and spec.names == sorted(CFG.names)
    src = spec.classification_source("train")
    assert len(src) == CFG.n_train
    item = src.load(0)
    assert item.image.ndim == 3 and 0 <= item.cls < 5


def _copy_yolo(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_yolo_bad_data_is_skipped_warned_and_counted(written: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    root = _copy_yolo(written / "yolo", tmp_path / "yolo")
    (root / "images" / "train" / "000000.png").write_bytes(b"not an image at all")  # corrupt
    (root / "images" / "train" / "000001.png").unlink()  # its label stays: not an image either
    label = root / "labels" / "train" / "000002.txt"
    good_lines = label.read_text().splitlines()
    label.write_text("\n".join(good_lines + ["0 0.5 0.5", "7 0.5 0.5 0.1 0.1", "x 1 2 3 4", "0 0.5 0.5 -1 0.2"]) + "\n")
    spec = resolve_data(str(root / "data.yaml"), "detect", 64)
    with caplog.at_level(logging.WARNING, logger="zoo.data"):
        src = spec.detection_source("train")
    assert len(src) == CFG.n_train - 2
    assert src.problems.counts == {"corrupt image": 1, "bad label line": 4}
    assert "1 corrupt image" in src.problems.summary() and "4 bad label lines" in src.problems.summary()
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 5
    rec = next(r for r in src.records if r.image.name == "000002.png")
    assert len(rec.cls) == len(good_lines)


def test_yolo_polygon_labels_give_masks(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "labels" / "a.txt").write_text("1 0.2 0.25 0.6 0.25 0.6 0.75 0.2 0.75\n")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "images", "val": "images", "names": ["a", "b"]}))
    src = resolve_data(str(tmp_path / "data.yaml"), "detect", 64).detection_source("train")
    got = src.load(0, with_masks=True)
    np.testing.assert_allclose(got.boxes, [[10, 10, 30, 30]])
    assert got.masks is not None and abs(int(got.masks[0].sum()) - 400) <= 45


def test_coco_bad_annotations_and_missing_images(written: Path, tmp_path: Path) -> None:
    doc = json.loads((written / "coco" / "annotations" / "instances_train.json").read_text())
    doc["images"].append({"id": 999, "file_name": "nope.png", "height": 64, "width": 80})
    doc["annotations"].append({"id": 5000, "image_id": 1, "category_id": 42, "bbox": [1, 1, 5, 5]})
    doc["annotations"].append({"id": 5001, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 5]})
    doc["annotations"].append({"id": 5002, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 1})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(doc))
    from zoo.data.sources import CocoSource

    src = CocoSource(ann, written / "coco" / "images" / "train")
    assert len(src) == CFG.n_train
    assert src.problems.counts == {"missing image": 1, "bad annotation": 2}
    assert len(src.load(0).cls) == len(render_shapes(CFG, "train", 0).cls)  # crowd left out


def test_coco_polygon_segmentation(tmp_path: Path) -> None:
    from PIL import Image

    from zoo.data.sources import CocoSource

    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "a.png")
    doc = {"images": [{"id": 1, "file_name": "a.png", "height": 30, "width": 30}],
           "categories": [{"id": 3, "name": "sq"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10],
                            "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]}]}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    got = CocoSource(tmp_path / "a.json", tmp_path).load(0, with_masks=True)
    assert got.cls.tolist() == [0] and got.masks is not None and 100 <= got.masks[0].sum() <= 121


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.yaml", "not found"),
    (lambda p: _write(p / "d.yaml", {"train": "nowhere", "val": "nowhere", "names": ["a"]}), "does not exist"),
    (lambda p: _write(p / "d.yaml", {"train": ".", "names": ["a"]}), "missing 'val'"),
    (lambda p: _write(p / "d.yaml", {"train": ".", "val": "."}), "names"),
])
def test_data_yaml_errors_are_one_line(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        resolve_data(str(make(tmp_path)), "detect", 64)
    assert "\n" not in str(info.value)


def test_empty_split_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    path = _write(tmp_path / "d.yaml", {"train": "images", "val": "images", "names": ["a"]})
    spec = resolve_data(str(path), "detect", 64)
    with pytest.raises(DataError, match="no images"):
        spec.detection_source("train")
    with pytest.raises(DataError, match="empty"):
        resolve_data("shapes:n_val=0", "detect", 64).detection_source("val")


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path
