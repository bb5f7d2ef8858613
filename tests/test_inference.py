"""``Model.predict``: every source kind, boxes in original pixels (as ``zoo predict`` draws them),
classification probabilities, ``Model.save`` / ``Model(ckpt)`` / ``from_checkpoint``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from tiny_cfgs import TINY_CLASSIFIER
from tiny_cfgs import TINY_RTDETR as _RTDETR
from zoo.commands.predict import classify_image, detect_image
from zoo.engine.tasks.base import TASKS
from zoo.inference import DEFAULT_IMGSZ
from zoo.model import Model

TINY_RTDETR = _RTDETR.replace("nc: 3\n", "nc: 3\nnames: [ball, box, cone]\n")  # named classes


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Model:
    cfg = tmp_path_factory.mktemp("cfg") / "tiny-rtdetr.yaml"
    cfg.write_text(TINY_RTDETR)
    torch.manual_seed(0)
    return Model(str(cfg))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Model:
    cfg = tmp_path_factory.mktemp("cfg") / "tiny-cls.yaml"
    cfg.write_text(TINY_CLASSIFIER)
    torch.manual_seed(0)
    return Model(str(cfg))


def _image(h: int = 48, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_boxes_are_those_zoo_predict_draws_in_original_pixels(detector: Model) -> None:
    image = _image()
    (r,) = detector.predict(image, conf=0.0, imgsz=64, max_det=7)
    expected = detect_image(detector.eval(), image, 64, conf=0.0, max_det=7)
    assert r.boxes.shape == (7, 4) and r.orig_shape == (48, 80)
    np.testing.assert_allclose(r.boxes, expected[:, :4], atol=1e-4)
    np.testing.assert_allclose(r.scores, expected[:, 4], atol=1e-6)
    np.testing.assert_array_equal(r.cls, expected[:, 5].astype(np.int64))
    assert r.labels == [detector.names[int(c)] for c in r.cls] and set(r.labels) <= {"ball", "box", "cone"}


def test_conf_filters_and_mode_is_restored(detector: Model) -> None:
    detector.train()
    (r,) = detector.predict(_image(), conf=1.0, imgsz=64)
    assert len(r) == 0 and r.boxes.shape == (0, 4) and detector.training
    detector.eval()


def test_every_source_kind_gives_the_same_detections(detector: Model, tmp_path: Path) -> None:
    image = _image()
    path = tmp_path / "a.png"
    Image.fromarray(image).save(path)
    (ref,) = detector.predict(image, conf=0.0, imgsz=64, max_det=5)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    sources = {"str": str(path), "path": path, "folder": tmp_path, "pil": Image.open(path), "tensor": tensor,
               "batch tensor": tensor[None], "list": [image]}
    for kind, source in sources.items():
        (r,) = detector.predict(source, conf=0.0, imgsz=64, max_det=5)
        np.testing.assert_allclose(r.boxes, ref.boxes, atol=1e-4, err_msg=kind)
        np.testing.assert_array_equal(r.orig_img, image, err_msg=kind)
    (r,) = detector.predict(path, conf=0.0, imgsz=64)
    assert (r.path, r.name) == (str(path), "a.png")


def test_lists_batches_and_names(detector: Model) -> None:
    images = [_image(48, 80, 0), _image(70, 30, 1), _image(64, 64, 2)]
    one = detector.predict(images, conf=0.0, imgsz=64, max_det=4)
    batched = detector.predict(np.stack([images[2], images[2]]), conf=0.0, imgsz=64, max_det=4, batch=2)
    assert [r.name for r in one] == ["image0", "image1", "image2"]
    assert [r.orig_shape for r in one] == [(48, 80), (70, 30), (64, 64)]
    for r in one:
        h, w = r.orig_shape
        assert (r.boxes[:, [0, 2]] <= w).all() and (r.boxes[:, [1, 3]] <= h).all() and (r.boxes >= 0).all()
    np.testing.assert_allclose(batched[0].boxes, one[2].boxes, atol=1e-3)


def test_classification_probs(classifier: Model, tmp_path: Path) -> None:
    image = _image()
    (r,) = classifier.predict(image, imgsz=32)
    np.testing.assert_allclose(r.probs, classify_image(classifier.eval(), image, 32), atol=1e-6)
    assert r.probs.shape == (4,) and abs(float(r.probs.sum()) - 1) < 1e-5
    assert r.top1 == int(np.argmax(r.probs)) and r.top5[0] == r.top1 and sorted(r.top5) == [0, 1, 2, 3]
    assert r.boxes is None and len(r) == 0
    data = r.to_dict()
    assert data["top5"][0]["class"] == r.top1 and data["top5"][0]["name"] == classifier.names[r.top1]
    drawn = r.plot()
    assert drawn.shape[1] == 80 and drawn.shape[0] > 48


def test_bad_sources_and_sam_are_one_line_errors(detector: Model, tmp_path: Path) -> None:
    with pytest.raises(zoo.DataError, match="does not exist"):
        detector.predict(tmp_path / "nope.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(zoo.DataError, match="holds no images"):
        detector.predict(tmp_path / "empty")
    with pytest.raises(zoo.DataError, match="cannot predict on a dict"):
        detector.predict({"x": 1})
    with pytest.raises(zoo.DataError, match="expected"):
        detector.predict(np.zeros((3, 4, 5, 6, 7), np.uint8))
    sam = Model("sam-tinyvit")
    with pytest.raises(zoo.ZooError, match="SamPredictor"):
        sam.predict(_image())


def test_default_sizes_match_the_training_tasks() -> None:
    assert DEFAULT_IMGSZ == {task: TASKS.get(task).default_imgsz for task in DEFAULT_IMGSZ}


def test_save_round_trip_restores_weights_names_and_eval_mode(detector: Model, tmp_path: Path) -> None:
    detector.names = {0: "red", 1: "green", 2: "blue"}
    detector.imgsz = 64
    path = detector.save(tmp_path / "sub" / "tiny.pt")
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    for loaded in (Model(path), Model(str(path)), Model.from_checkpoint(path), zoo.Model(str(path))):
        assert not loaded.training
        assert loaded.names == detector.names and loaded.name == detector.name and loaded.imgsz == 64
        for (k, a), b in zip(detector.state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(a, b), k
    (a,), (b,) = detector.predict(_image(), conf=0.0), Model(path).predict(_image(), conf=0.0)  # imgsz 64 from the file
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
    detector.names = {0: "ball", 1: "box", 2: "cone"}
    detector.imgsz = None


def test_from_checkpoint_of_a_training_checkpoint_is_in_eval_mode(classifier: Model, tmp_path: Path) -> None:
    from zoo.engine.training_checkpoint import atomic_save, stamp

    ckpt = {**stamp(), "model_state": classifier.state_dict(), "yaml": dict(classifier.yaml), "scale": classifier.scale,
            "task": "classify", "names": ["a", "b", "c", "d"], "plugins": [], "args": {"imgsz": 32}, "name": "run1"}
    atomic_save(ckpt, tmp_path / "last.pt")
    model = Model.from_checkpoint(tmp_path / "last.pt")
    assert not model.training and model.names == {0: "a", 1: "b", 2: "c", 3: "d"} and model.name == "run1"
    assert model.imgsz == 32
    (r,) = model.predict(_image())
    assert r.labels[0] in "abcd"


def test_saved_rows_replaces_the_save_attribute(detector: Model) -> None:
    assert isinstance(detector.saved_rows, frozenset) and callable(detector.save)
