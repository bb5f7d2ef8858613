"""``Results``: views, plot / save / JSON for detection and classification results."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.results import Results


def _detections() -> Results:
    image = np.full((40, 60, 3), 30, np.uint8)
    return Results(image, None, "image0", {0: "cat", 1: "dog"}, "detect",
                   boxes=np.array([[5, 5, 30, 20], [10, 12, 50, 38]], np.float32),
                   scores=np.array([0.9, 0.4], np.float32), cls=np.array([1, 0], np.int64))


def test_detection_views_and_json() -> None:
    r = _detections()
    assert len(r) == 2 and r.orig_shape == (40, 60) and r.labels == ["dog", "cat"]
    data = json.loads(r.to_json())
    assert data == r.to_dict()
    assert data["shape"] == [40, 60] and data["task"] == "detect"
    assert data["detections"][0] == {"box": [5.0, 5.0, 30.0, 20.0], "score": 0.9, "class": 1, "name": "dog"}
    assert "2 boxes" in repr(r)
    with pytest.raises(AttributeError, match="no class probabilities"):
        r.top1


def test_plot_and_save(tmp_path: Path) -> None:
    r = _detections()
    drawn = r.plot()
    assert drawn.shape == (40, 60, 3) and drawn.dtype == np.uint8 and not np.array_equal(drawn, r.orig_img)
    assert np.array_equal(r.orig_img, np.full((40, 60, 3), 30, np.uint8))  # the original is not drawn on
    out = r.save(tmp_path / "deep" / "x.png")
    assert np.array_equal(np.asarray(Image.open(out)), drawn)
    empty = Results(r.orig_img, None, "e", {}, "detect", boxes=np.zeros((0, 4), np.float32),
                    scores=np.zeros(0, np.float32), cls=np.zeros(0, np.int64))
    assert np.array_equal(empty.plot(), r.orig_img) and empty.to_dict()["detections"] == []


def test_classification_views() -> None:
    probs = np.array([0.1, 0.05, 0.5, 0.2, 0.1, 0.05], np.float32)
    r = Results(np.zeros((8, 8, 3), np.uint8), "a/b.png", "b.png", {i: f"c{i}" for i in range(6)}, "classify",
                probs=probs)
    assert r.top1 == 2 and r.top5 == [2, 3, 0, 4, 1] and r.labels == ["c2"] and abs(r.top1conf - 0.5) < 1e-6
    assert [d["class"] for d in r.to_dict()["top5"]] == r.top5
    assert r.plot().shape == (8 + 14, 8, 3)


def test_default_save_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _detections().save() == Path("image0_pred.png") and (tmp_path / "image0_pred.png").is_file()
