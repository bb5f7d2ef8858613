"""Annotation files that used to crash, escape the dataset root or slip through silently (issue 14):
each bad item is now skipped, warned about and counted, and a split with nothing usable left is one
DataError line."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tiny_cfgs import TINY_DETECT as BASE_DETECT
from zoo.data.dataset import DetectionDataset
from zoo.data.sources import CocoSource, YoloSource, list_images
from zoo.data.spec import resolve_data
from zoo.errors import DataError


def _png(path: Path, h: int = 20, w: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)
    return path


def _coco(tmp_path: Path, images: list[dict], annotations: list[dict] | None = None,
          size: tuple[int, int] = (20, 24)) -> CocoSource:
    """A COCO split whose images folder holds ``good.png`` (20x24, described as ``size`` in the JSON)
    as image 1, then the ``images`` entries as given."""
    _png(tmp_path / "ds" / "images" / "good.png")
    doc = {"images": [{"id": 1, "file_name": "good.png", "height": size[0], "width": size[1]}] + images,
           "annotations": annotations or [], "categories": [{"id": 1, "name": "thing"}]}
    ann = tmp_path / "ds" / "ann.json"
    ann.write_text(json.dumps(doc))  # json writes float("nan") as NaN, which COCO loaders accept
    return CocoSource(ann, tmp_path / "ds" / "images")


def _messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "zoo.data")


# ---------------------------------------------------------------- item 2: paths outside the root

def test_coco_file_name_outside_the_dataset_root_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outside = _png(tmp_path / "secret.png")  # a real, decodable image: only the path makes it wrong
    with caplog.at_level(logging.WARNING, logger="zoo.data"):
        src = _coco(tmp_path, [{"id": 2, "file_name": "../../secret.png"},
                               {"id": 3, "file_name": str(outside.resolve())},
                               {"id": 4, "file_name": "../../../../etc/passwd"},
                               {"id": 5, "file_name": "sub/../good.png"}])  # stays inside: fine
    assert [Path(r[0]).name for r in src.records] == ["good.png", "good.png"]
    assert src.problems.counts == {"image outside dataset root": 3}
    assert "secret.png" in _messages(caplog) and "etc/passwd" in _messages(caplog)


def test_all_images_outside_the_root_is_one_data_error(tmp_path: Path) -> None:
    _png(tmp_path / "secret.png")
    ann = tmp_path / "ds" / "ann.json"
    (tmp_path / "ds" / "images").mkdir(parents=True)
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "../../secret.png"}], "annotations": [],
                               "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(DataError, match="no usable images.*1 image outside dataset root") as info:
        CocoSource(ann, tmp_path / "ds" / "images")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- item 6: COCO entries

@pytest.mark.parametrize("entry, needle", [
    ({"id": 2, "file_name": "good.png", "height": "abc", "width": 24}, "height"),
    ({"id": 2, "file_name": "good.png", "height": 0, "width": 24}, "height"),
    ({"id": 2, "file_name": "good.png", "height": 20, "width": -5}, "width"),
    ({"id": 2, "file_name": "good.png", "height": 10**9, "width": 24}, "far from the image"),
    ({"id": 2, "height": 20, "width": 24}, "file_name"),
    ({"id": 2, "file_name": 7}, "file_name"),
    ({"file_name": "good.png"}, "id"),
    ({"id": 1, "file_name": "good.png"}, "used by an earlier image"),
    ("not an object", "object"),
])
def test_bad_coco_image_entries_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        entry: object, needle: str) -> None:
    with caplog.at_level(logging.WARNING, logger="zoo.data"):
        src = _coco(tmp_path, [entry])  # type: ignore[list-item]
    assert len(src) == 1 and src.problems.counts == {"bad image entry": 1}
    assert needle in _messages(caplog) and "corrupt image" not in _messages(caplog)


@pytest.mark.parametrize("bbox", [[float("nan"), 1, 5, 5], [1, 1, float("inf"), 5], [1, 1, 5, float("nan")],
                                  [1e300, 1, 5, 5], ["a", 1, 5, 5]])
def test_coco_bbox_that_is_not_finite_is_skipped(tmp_path: Path, bbox: list) -> None:
    src = _coco(tmp_path, [], [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6]},
                               {"id": 2, "image_id": 1, "category_id": 1, "bbox": bbox}])
    assert src.problems.counts == {"bad annotation": 1}
    got = src.load(0)
    assert len(got.cls) == 1 and np.isfinite(got.boxes).all()


@pytest.mark.parametrize("annotation", [
    {"id": 9, "image_id": 1, "category_id": [1], "bbox": [1, 1, 4, 4]},  # unhashable: was a TypeError
    {"id": 9, "image_id": [1], "category_id": 1, "bbox": [1, 1, 4, 4]},
    "not an object",
])
def test_coco_annotations_of_the_wrong_shape_are_skipped(tmp_path: Path, annotation: object) -> None:
    src = _coco(tmp_path, [], [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6]}, annotation])
    assert len(src) == 1 and src.problems.counts == {"bad annotation": 1}
    assert len(src.load(0).cls) == 1


@pytest.mark.parametrize("segmentation", [
    [[2, 2, 8, 2, 8]],  # odd number of values
    [2, 2, 8, 2, 8, 8],  # not a list of polygons
    [[2, 2, "x", 2, 8, 8]],
    [[2, 2, float("nan"), 2, 8, 8]],
    [[2, 2, 8, 2]],  # two points fill nothing
    {"size": [20, 24], "counts": [5, 10]},  # run lengths do not cover the image
    {"size": [99, 24], "counts": [99 * 24]},  # RLE for another image size
    {"size": [20, 24], "counts": "!!"},
    "polygon",
])
def test_malformed_segmentation_skips_the_annotation_not_the_image(tmp_path: Path, segmentation: object) -> None:
    good = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6], "segmentation": [[2, 2, 8, 2, 8, 8, 2, 8]]}
    bad = {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 6, 6], "segmentation": segmentation}
    src = _coco(tmp_path, [], [good, bad])
    # Checked when the source is built, so detection (which never draws masks) counts it too.
    assert src.problems.counts == {"bad annotation": 1}
    data = DetectionDataset(src, 32, with_masks=True)  # SAM's view of the data
    item = data[0]
    assert item["bad"] == 0 and item["path"].endswith("good.png")  # the image was not replaced
    assert len(item["cls"]) == 1 and item["masks"].shape[0] == 1 and item["masks"].any()
    assert src.problems.counts == {"bad annotation": 1}


# ---------------------------------------------------------------- item 6: YOLO label files

def _yolo(root: Path, labels: dict[str, bytes], images: tuple[str, ...] = ()) -> YoloSource:
    for stem, data in labels.items():
        _png(root / "images" / f"{stem}.png")
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{stem}.txt").write_bytes(data)
    for name in images:
        _png(root / "images" / name)
    return YoloSource(list_images(root / "images"), ["a", "b"], where="data.yaml (train)")


def test_yolo_label_file_with_invalid_utf8_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="zoo.data"):
        src = _yolo(tmp_path, {"ok": b"0 0.5 0.5 0.2 0.2\n", "bad": b"0 0.5 0.5 0.2 0.2\n\xff\xfe\x80 0.1\n"})
    assert [r.image.name for r in src.records] == ["ok.png"]
    assert src.problems.counts == {"bad label file": 1}
    assert "bad.txt" in _messages(caplog) and "UTF-8" in _messages(caplog)


def test_only_undecodable_label_files_is_one_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no usable images.*1 bad label file") as info:
        _yolo(tmp_path, {"bad": b"\xc3\x28"})
    assert "\n" not in str(info.value)


def test_two_images_sharing_one_label_file_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="zoo.data"):
        src = _yolo(tmp_path, {"dup": b"0 0.5 0.5 0.2 0.2\n", "solo": b"1 0.5 0.5 0.2 0.2\n"}, images=("dup.jpg",))
    # The label cannot be told apart between the two, so neither image is trained on.
    assert [r.image.name for r in src.records] == ["solo.png"]
    assert src.problems.counts == {"duplicate label file": 2}
    text = _messages(caplog)
    assert "dup.jpg" in text and "dup.png" in text and "dup.txt" in text


def test_same_stem_without_a_label_file_is_fine(tmp_path: Path) -> None:
    src = _yolo(tmp_path, {"solo": b"1 0.5 0.5 0.2 0.2\n"}, images=("bg.png", "bg.jpg"))
    assert len(src) == 3 and src.problems.total == 0


# ---------------------------------------------------------------- item 5: nc in data.yaml

def _yaml(tmp_path: Path, **doc: object) -> str:
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"train": "images", "val": "images", **doc}))
    return str(path)


def test_huge_nc_without_names_is_refused_at_once(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(DataError) as info:
        resolve_data(_yaml(tmp_path, nc=1_000_000_000), "detect", 64)
    assert time.perf_counter() - t0 < 1.0
    msg = str(info.value)
    assert "\n" not in msg and "data.yaml" in msg and "'nc'" in msg and "names" in msg


def test_nc_at_the_bound_and_explicit_names_still_work(tmp_path: Path) -> None:
    assert len(resolve_data(_yaml(tmp_path, nc=100_000), "detect", 64).names) == 100_000
    assert resolve_data(_yaml(tmp_path, nc=2, names=["x", "y"]), "detect", 64).names == ["x", "y"]


@pytest.mark.parametrize("nc", [0, -3, "abc", 2.5, True, [3]])
def test_nc_must_be_a_positive_integer(tmp_path: Path, nc: object) -> None:
    with pytest.raises(DataError, match="'nc' must be a positive integer") as info:
        resolve_data(_yaml(tmp_path, nc=nc), "detect", 64)
    assert "\n" not in str(info.value)


def test_nc_that_disagrees_with_names_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="'nc' is 3 but 'names' lists 2 classes"):
        resolve_data(_yaml(tmp_path, nc=3, names=["x", "y"]), "detect", 64)


# ---------------------------------------------------------------- what the user sees from `zoo train`

TINY_DETECT = BASE_DETECT.replace("nc: 5", "nc: 3")
TRAIN = ["--epochs", "1", "--no-plots", "--imgsz", "64", "--batch", "4", "--workers", "0", "--device", "cpu",
         "--no-progress"]


def test_skipped_label_files_reach_the_epoch_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    import torch

    from zoo.cli import main
    from zoo.data.export import write_yolo
    from zoo.data.shapes import ShapesConfig

    monkeypatch.chdir(tmp_path)  # runs/ lands in the temporary folder
    torch.set_num_threads(1)
    (tmp_path / "tiny.yaml").write_text(TINY_DETECT)
    root = tmp_path / "ds"
    write_yolo(ShapesConfig(n_train=6, n_val=2, size=(64, 64)), root)
    (root / "labels" / "train" / "000000.txt").write_bytes(b"0 0.5 0.5 0.2 0.2\n\xff\n")
    _png(root / "images" / "train" / "000001.jpg", 64, 64)  # shares labels/train/000001.txt
    rc = main(["train", str(tmp_path / "tiny.yaml"), "--data", str(root / "data.yaml"), *TRAIN])
    out = capsys.readouterr().out
    assert rc == 0
    summary = next(line for line in out.splitlines() if line.startswith("epoch 1/1"))
    assert "skipped 3 (1 bad label file, 2 duplicate label files)" in summary

    (tmp_path / "big.yaml").write_text(yaml.safe_dump({"train": str(root / "images" / "train"),
                                                       "val": str(root / "images" / "val"), "nc": 10**9}))
    rc = main(["train", str(tmp_path / "tiny.yaml"), "--data", str(tmp_path / "big.yaml"), *TRAIN])
    captured = capsys.readouterr()
    assert rc == 2
    lines = [ln for ln in (captured.out + captured.err).splitlines() if "big.yaml" in ln]
    assert len(lines) == 1 and "'nc'" in lines[0]


def test_polygons_in_a_larger_json_frame_are_scaled_to_the_image(tmp_path: Path) -> None:
    # The JSON describes the image at twice its stored size (a downscaled copy of a dataset).
    src = _coco(tmp_path, [], [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 8, 16, 16],
                                "segmentation": [[8, 8, 24, 8, 24, 24, 8, 24]]}], size=(40, 48))
    got = src.load(0, with_masks=True)
    np.testing.assert_allclose(got.boxes, [[4, 4, 12, 12]])
    ys, xs = np.nonzero(got.masks[0])
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (4, 4, 12, 12)
