"""YOLOv10: published parameter counts and GFLOPs, Ultralytics fixture parity, fusing, sizes."""
from __future__ import annotations

import pytest
import torch

from zoo import Model
from zoo.nn.yolov10 import RepVGGDW
from zoo.ops.detections import topk_detections as v10_postprocess

from zoo_test_paths import CFG, fixture_dir

# Ultralytics 8.4 counts (nc=80) and the published GFLOPs at 640
PUBLISHED = {"n": (2_775_520, 8.8), "s": (8_128_272, 25.2), "m": (16_576_768, 64.6),
             "b": (20_574_384, 99.5), "l": (25_888_688, 128.0), "x": (31_808_960, 172.0)}


@pytest.mark.parametrize("scale", list(PUBLISHED))
def test_params_and_gflops_match_the_published_variants(scale):
    params, gflops = PUBLISHED[scale]
    model = Model(CFG / f"yolov10{scale}.yaml")
    result = model.info(imgsz=640, verbose=False)
    assert result["params"] == params
    assert abs(result["gflops"] - gflops) / gflops < 0.02, result["gflops"]


def _fixture_model(source: str = "state_dict.pt") -> tuple[Model, dict]:
    folder = fixture_dir("yolov10n")
    model = Model(CFG / "yolov10n.yaml").eval()
    report = model.load(folder / source, strict=True, verbose=False)
    assert report.ok and len(report.loaded) == 595
    return model, torch.load(folder / "io.pt", weights_only=True)


@pytest.mark.parametrize("source", ["state_dict.pt", "ultralytics_ckpt.pt"])
def test_fixture_parity(source):
    model, io = _fixture_model(source)
    with torch.no_grad():
        (_, raw), kept = model.run_rows(io["input"], keep=(16, 19, 22))
    for row, ref in io["features"].items():
        assert (kept[int(row)] - ref).abs().max() < 1e-3, row
    # io.pt's `output` is Ultralytics 8.4.190's eval output, which decodes the one-to-many branch
    # (its head ran with end2end off); ours gives it with end2end=False.
    head = model.head
    assert (head.decode(raw["one2many"]) - io["output"]).abs().max() < 1e-3
    head.end2end = False
    with torch.no_grad():
        assert (model(io["input"])[1]["decoded"] - io["output"]).abs().max() < 1e-3
    head.end2end = True
    with torch.no_grad():
        one2one = model(io["input"])[1]["decoded"]
    assert one2one.shape == io["output"].shape
    assert torch.equal(one2one, head.decode(raw["one2one"]))


def test_fixture_parity_after_fuse_and_deploy():
    model, io = _fixture_model()
    with torch.no_grad():
        before = model(io["input"])[1]["decoded"]
        model.fuse()
        assert not any(isinstance(m, RepVGGDW) and m.conv1 is not None for m in model.modules())
        fused = model(io["input"])[1]["decoded"]
        model.head.end2end = False
        assert (model(io["input"])[1]["decoded"] - io["output"]).abs().max() < 1e-3
        model.head.end2end = True
        model.deploy()
        deployed = model(io["input"])[1]["decoded"]
    assert (fused - before).abs().max() < 1e-3
    assert (deployed - before).abs().max() < 1e-3
    assert model.head.cv2 is None


def test_fuse_keeps_outputs_with_nontrivial_batchnorm():
    torch.manual_seed(0)
    model = Model(CFG / "yolov10s.yaml", nc=4)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.rand(1, 3, 160, 224)
    with torch.no_grad():
        before = model(x)[1]["decoded"]
        after = model.fuse()(x)[1]["decoded"]
    assert (after - before).abs().max() / before.abs().max() < 1e-4


@pytest.mark.parametrize("shape", [(2, 3, 256, 256), (1, 3, 224, 320), (3, 3, 96, 160)])
def test_any_multiple_of_32_non_square_and_batched(shape):
    model = Model(CFG / "yolov10n.yaml", nc=6).eval()
    b, _, h, w = shape
    with torch.no_grad():
        raw = model(torch.rand(*shape))[1]
    decoded = raw["decoded"]
    anchors = sum((h // s) * (w // s) for s in (8, 16, 32))
    assert decoded.shape == (b, 4 + 6, anchors)
    assert decoded[:, 4:].min() >= 0 and decoded[:, 4:].max() <= 1
    assert [t.shape[-2:] for t in raw["one2one"]] == [(h // s, w // s) for s in (8, 16, 32)]
    model.train()
    out = model(torch.rand(*shape))
    assert set(out) == {"one2many", "one2one"}


def test_nms_free_postprocess_picks_the_best_scores():
    preds = torch.zeros(1, 5, 4 + 3)
    preds[0, :, :4] = torch.tensor([[10.0, 10, 4, 4]] * 5)
    preds[0, 2, 4 + 1] = 0.9
    preds[0, 4, 4 + 2] = 0.7
    dets = v10_postprocess(preds, max_det=2)
    assert dets.shape == (1, 2, 6)
    assert dets[0, 0].tolist() == pytest.approx([8, 8, 12, 12, 0.9, 1])
    assert dets[0, 1, 4:].tolist() == pytest.approx([0.7, 2])
