"""A Detect head that needs NMS (YOLOv8/11) to ONNX: the graph ends with the candidates, the runtime runs
the NMS; candidates and scores equal PyTorch's, on a dynamic graph at two sizes and batch 2."""
from __future__ import annotations

import copy

import pytest
import torch

from zoo import Model, load_exported
from zoo.export.onnx import read_onnx_metadata
from zoo.ops.detections import nms_detections

from export_helpers import calibrate_batchnorm, require_runtime, shapes_batch


@pytest.fixture(scope="module")
def detector() -> Model:
    torch.manual_seed(0)
    model = calibrate_batchnorm(Model("yolov8n"), shapes_batch(2, 256))
    with torch.no_grad():  # class scores in a range where many pass the candidate threshold
        for branch in model.model[-1].cv3:
            branch[-1].bias.fill_(-3.0)
    return model.eval()


@pytest.mark.parametrize("shape", [(2, 3, 256, 256), (1, 3, 192, 320)])
def test_candidates_and_detections_match_pytorch(detector: Model, tmp_path, shape):
    require_runtime()
    path = detector.export(imgsz=256, dynamic=True, file=tmp_path / "yolov8n.onnx")
    meta = read_onnx_metadata(path)
    assert meta.output_names == ["candidates"] and meta.nms_iou == pytest.approx(0.7)
    exported = load_exported(path).as_module()
    images = shapes_batch(shape[0], 256)[..., :shape[2], :shape[3]].contiguous() if shape[2] <= 256 else \
        torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    deployed = copy.deepcopy(detector).deploy().eval()  # what was exported (BN folded)
    with torch.no_grad():
        ref, raw = deployed(images)
        candidates = exported.exported(images)
        dets, _ = exported(images)
    assert candidates.shape == raw["decoded"].transpose(1, 2).shape
    # pixels: ORT's and PyTorch's fp32 sums differ in the last bits, and the untrained boxes run to ~600 px
    assert (candidates - raw["decoded"].transpose(1, 2)).abs().max() < 1e-2
    assert torch.equal(dets, nms_detections(candidates.float(), 300, 0.7))  # the runtime's NMS is the head's
    assert ref.shape[1] > 10 and dets.shape == ref.shape
    # scores equal; rows with (nearly) tied scores may swap, so compare the sorted scores
    assert (ref[..., 4].sort(-1).values - dets[..., 4].sort(-1).values).abs().max() < 1e-4
