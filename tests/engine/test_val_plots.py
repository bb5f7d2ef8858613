"""Plots a person looks at: integer epoch ticks, GT | prediction panels with a legend, the detection
confusion matrix and PR curve, SAM masks with their prompts, and what ``zoo val`` writes to disk."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.cli import main
from zoo.drawing import class_colour, draw_boxes, draw_legend, side_by_side
from zoo.engine.metrics import ConfusionMatrix, DetectionMetrics
from zoo.engine.plotting import plot_confusion_matrix, plot_pr_curve, results_figure

from tiny_cfgs import TINY_SAM

VAL = ["--imgsz", "32", "--batch", "4", "--workers", "0", "--device", "cpu"]


def _image(path: Path, min_side: int = 32) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        w, h = im.size
    assert min(w, h) >= min_side and max(w, h) < 20000
    return w, h


def test_results_figure_has_integer_epoch_ticks(tmp_path: Path) -> None:
    csv = tmp_path / "results.csv"
    csv.write_text("epoch,time,train/box,mAP50\n1,1.0,2.5,0.1\n2,2.0,2.0,0.2\n3,3.0,1.5,0.3\n")
    fig = results_figure(csv)
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_confusion_matrix_counts() -> None:
    cm = ConfusionMatrix(nc=2, conf=0.25, iou=0.5)
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], float)
    gt_cls = np.array([0, 1, 1])
    pred = np.array([[0, 0, 10, 10],       # right class 0
                     [20, 20, 30, 30],     # class 1 box called class 0
                     [80, 80, 90, 90],     # false alarm, class 1
                     [50, 50, 60, 60]], float)  # below conf: the class-1 box at 50 is missed
    cm.update(pred, np.array([0.9, 0.8, 0.7, 0.1]), np.array([0, 0, 1, 1]), gt, gt_cls)
    expected = np.array([[1, 0, 0],   # true 0
                         [1, 0, 1],   # true 1: once called 0, once missed
                         [0, 1, 0]])  # background: one class-1 false alarm
    np.testing.assert_array_equal(cm.matrix, expected)
    assert cm.matrix.sum() == 4


def test_confusion_and_pr_plots_are_images(tmp_path: Path) -> None:
    m = DetectionMetrics(3)
    m.update(np.array([[0, 0, 10, 10], [0, 0, 5, 5]]), np.array([0.9, 0.4]), np.array([0, 1]),
             np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 1]))
    recall, precision = m.pr_curve()
    assert precision.shape == (3, 101) and np.isnan(precision[2]).all() and precision[0, 0] == pytest.approx(1.0)
    _image(plot_pr_curve(recall, precision, ["a", "b", "c"], tmp_path / "pr.png"), 200)
    _image(plot_confusion_matrix(np.arange(16).reshape(4, 4), ["a", "b", "c"], tmp_path / "cm.png"), 200)


def test_small_and_overlapping_boxes_get_no_text() -> None:
    img = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[10, 40, 90, 90], [12, 42, 88, 88], [70, 5, 75, 10]], float)
    labelled = draw_boxes(img, boxes[:1], np.array([0]), ["a"], min_label_size=24)
    all_three = draw_boxes(img, boxes, np.array([0, 0, 0]), ["a"], min_label_size=24)
    # the second (overlapping) and third (tiny) boxes add outlines but no filled label strip
    strip = (slice(29, 40), slice(12, 40))
    assert (labelled[strip] == all_three[strip]).all()
    legend = draw_legend(200, [0, 2], ["a", "b", "c"])
    assert legend.shape[1] == 200 and tuple(legend[6, 8]) == class_colour(0)
    pair = side_by_side([img, img], ["ground truth", "predictions"])
    assert pair.shape[1] == 204 and pair.shape[0] > 100


def test_zoo_val_writes_metrics_and_plots(tiny_detect_cfg: Path, tmp_path: Path, capsys) -> None:
    args = ["val", str(tiny_detect_cfg), "--data", "shapes:n_train=4,n_val=4", *VAL, "--project", str(tmp_path / "v")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mAP50-95" in out and f"results saved to {tmp_path / 'v' / 'val'}" in out
    folder = tmp_path / "v" / "val"
    record = json.loads((folder / "metrics.json").read_text())
    assert {"mAP50", "mAP50-95", "mAP75"} <= set(record["metrics"])
    assert record["images"] == 4 and record["split"] == "val" and record["per_class_ap50"]
    w, h = _image(folder / "val_predictions.jpg")
    assert w >= 2 * (2 * 32)  # two columns of ground truth | predictions pairs
    _image(folder / "confusion_matrix.png", 200)
    _image(folder / "PR_curve.png", 200)
    assert main(args) == 0
    assert (tmp_path / "v" / "val2" / "metrics.json").is_file()  # a second run gets a new folder


@pytest.mark.parametrize("task", ["sam"])
def test_sam_val_image_shows_masks_and_prompts(task: str, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "tiny-sam.yaml"
    cfg.write_text(TINY_SAM)
    assert main(["val", str(cfg), "--data", "shapes:n_train=2,n_val=2,max_objects=3", "--imgsz", "64", "--batch",
                 "2", "--workers", "0", "--device", "cpu", "--project", str(tmp_path / "v")]) == 0
    folder = tmp_path / "v" / "val"
    assert "mIoU" in json.dumps(json.loads((folder / "metrics.json").read_text()))
    w, h = _image(folder / "val_predictions.jpg", 64)
    assert w >= 3 * 64  # ground truth | box prompts | point prompts
