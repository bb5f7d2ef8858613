"""Detect: Ultralytics fixture parity (yolov8n, yolo11n), the class-branch choice, end-to-end heads, NMS, training."""
from __future__ import annotations

import pytest
import torch

from zoo import Model
from zoo.checkpoint import load_weights, read_checkpoint
from zoo.engine.losses.yolo import YOLOv8Loss, YOLOv10Loss
from zoo.nn.yolo_detect import Detect

from zoo_test_paths import fixture_dir

FIXTURE_PARAMS = {"yolov8n": 3_157_200, "yolo11n": 2_624_080}  # the fixtures' meta.json


@pytest.mark.parametrize("name", sorted(FIXTURE_PARAMS))
def test_ultralytics_checkpoint_loads_whole_and_reproduces_its_output(name):
    folder = fixture_dir(name)
    ckpt = read_checkpoint(folder / "ultralytics_ckpt.pt")
    assert ckpt.kind == "ultralytics"
    model = Model(name)  # zoo's shipped cfg, by Ultralytics' name
    report = load_weights(model, ckpt, verbose=False)
    assert report.ok and not report.skipped and len(report.loaded) == len(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == FIXTURE_PARAMS[name]
    io = torch.load(folder / "io.pt")
    model.eval()
    with torch.no_grad():
        decoded = model(io["input"])[1]["decoded"]
        assert decoded.shape == io["output"].shape
        assert (decoded - io["output"]).abs().max() < 1e-3
        model.fuse()
        fused = model(io["input"])[1]["decoded"]
    assert (fused - io["output"]).abs().max() < 1e-3


def test_checkpoint_builds_from_its_own_config():
    """An Ultralytics checkpoint carries its YAML: Model(path) builds that and loads every tensor."""
    folder = fixture_dir("yolo11n")
    model = Model(folder / "ultralytics_ckpt.pt")
    assert type(model.model[-1]) is Detect and model.task == "detect"
    assert sum(p.numel() for p in model.parameters()) == FIXTURE_PARAMS["yolo11n"]
    assert model.names == {i: str(i) for i in range(80)}  # the class names stored in the checkpoint


def _head(model: Model) -> Detect:
    head = model.model[-1]
    assert isinstance(head, Detect)
    return head


def test_class_branch_follows_the_body_as_in_ultralytics():
    # YOLOv8's files get two full 3x3 convs per class branch, YOLO11's (C3k2 in the body) the depthwise pairs
    v8, v11 = _head(Model("yolov8n")), _head(Model("yolo11n"))
    assert v8.cv3[0][0].conv.groups == 1 and len(v8.cv3[0]) == 3
    assert v11.cv3[0][0][0].conv.groups == v11.cv3[0][0][0].conv.in_channels
    assert v8.loss == "yolov8" and v8.one2one_cv2 is None


def test_end_to_end_head_from_the_config_top_level():
    model = Model("yolo26n")  # end2end: True, reg_max: 1
    head = _head(model)
    assert head.loss == "yolov10" and head.reg_max == 1 and head.one2one_cv2 is not None
    assert sum(p.numel() for p in model.parameters()) == 2_572_280  # Ultralytics' printed yolo26n
    model.eval()
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        dets, raw = model(x, max_det=7)
        assert dets.shape == (2, 7, 6) and set(raw) >= {"decoded", "one2one", "one2many"}
        model.deploy()  # the one-to-many branch only trains: deploy drops it
        assert head.cv2 is None and head.one2one_cv2 is not None
        dets2, raw2 = model(x, max_det=7)
    assert "one2many" not in raw2 and torch.allclose(dets, dets2, atol=1e-4)


def _tiny(end2end: bool = False) -> Model:
    return Model({"nc": 3, "end2end": end2end, "backbone": [
        [-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]],
        [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]]],
        "head": [[[2, 3, 4], 1, "Detect", ["nc"]]]})


def test_nms_detections_are_sorted_suppressed_and_padded():
    model = _tiny().eval()
    head = _head(model)
    with torch.no_grad():
        for level in head.cv3:  # confident everywhere: every anchor proposes every class
            level[-1].bias.fill_(3.0)
        dets, raw = model(torch.rand(2, 3, 64, 64), max_det=50)
    assert dets.shape[0] == 2 and dets.shape[1] <= 50 and dets.shape[2] == 6
    for image in dets:
        real = image[image[:, 4] > 0]
        assert torch.all(real[:-1, 4] >= real[1:, 4])  # best first
        for c in real[:, 5].unique():  # within a class no two kept boxes overlap by more than the threshold
            boxes = real[real[:, 5] == c, :4]
            lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
            rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
            inter = (rb - lt).clamp(min=0).prod(-1)
            area = (boxes[:, 2:] - boxes[:, :2]).prod(-1)
            iou = inter / (area[:, None] + area[None] - inter)
            assert (iou.triu(1) <= head.nms_iou + 1e-6).all()
    assert raw["decoded"].shape == (2, 4 + 3, 8 * 8 + 4 * 4 + 2 * 2)


@pytest.mark.parametrize("end2end,loss_type", [(False, YOLOv8Loss), (True, YOLOv10Loss)])
def test_training_step_reduces_the_loss(end2end, loss_type):
    torch.manual_seed(0)
    model = _tiny(end2end).train()
    loss_fn = {False: YOLOv8Loss, True: YOLOv10Loss}[end2end](_head(model))
    assert isinstance(loss_fn, loss_type)
    batch = {"batch_idx": torch.tensor([0, 1]), "cls": torch.tensor([1, 2]),
             "boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0], [20.0, 16.0, 60.0, 60.0]])}
    x = torch.rand(2, 3, 64, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, items = loss_fn(model(x), batch)
        assert set(items) == {"box", "cls", "dfl"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_a_callers_conf_bounds_the_nms_candidates():
    """zoo.nn.heads.detect passes conf to heads that accept it: an NMS head then skips the candidates
    below it (predict at 0.25 need not suppress thousands of 0.001 boxes) and keeps the same detections
    above it; a head without the keyword (v10Detect accepts it, a plain classifier would not) is unaffected."""
    from zoo.nn.heads import detect

    model = _tiny().eval()
    with torch.no_grad():
        for level in _head(model).cv3:
            level[-1].bias.fill_(-1.0)
        x = torch.rand(2, 3, 64, 64)
        everything, _ = detect(model, x, 300)
        conf = float(everything[..., 4][everything[..., 4] > 0].median())  # half the detections score above
        confident, _ = detect(model, x, 300, conf=conf)
    assert "conf" in model.forward_keywords
    assert everything.shape[1] > confident.shape[1] > 0
    for full, kept in zip(everything, confident):
        assert torch.equal(kept[kept[:, 4] > 0], full[full[:, 4] > conf])
