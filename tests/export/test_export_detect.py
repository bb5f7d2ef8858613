"""YOLOv10n to ONNX end to end: ONNX Runtime's detections are the PyTorch deploy model's, at batch
1 and 2 and two image sizes from one dynamic graph; metadata; plain ONNX ops only; static graphs."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml

import zoo
from zoo import Model
from zoo.export import ExportError, OnnxModel
from zoo.export.onnx import graph_op_types, read_onnx_metadata

from export_helpers import assert_same_detections, calibrate_batchnorm, require_runtime, resized, shapes_batch
from tiny_cfgs import TINY_DETECT


@pytest.fixture(scope="module")
def detector() -> Model:
    torch.manual_seed(0)
    model = calibrate_batchnorm(Model("yolov10n"), shapes_batch(2, 320))
    with torch.no_grad():  # class scores in a range where they differ (not all ~0 or ~1)
        for branch in model.head.one2one_cv3:
            branch[-1].bias.fill_(-3.0)
    return model


@pytest.fixture(scope="module")
def deployed(detector: Model) -> Model:
    """The reference: PyTorch's eval output of the deploy model (a copy)."""
    return copy.deepcopy(detector).deploy().eval()


@pytest.fixture(scope="module")
def dynamic_onnx(detector: Model, tmp_path_factory: pytest.TempPathFactory):
    require_runtime()
    return detector.export(imgsz=320, dynamic=True, file=tmp_path_factory.mktemp("export") / "yolov10n.onnx")


@pytest.fixture(scope="module")
def runtime(dynamic_onnx) -> OnnxModel:
    return OnnxModel(dynamic_onnx)


# 64: 84 anchors, fewer than the 300 detections the graph's top-k was traced for
@pytest.mark.parametrize("batch, size", [(1, 320), (2, 640), (1, 64)])
def test_dynamic_graph_gives_the_pytorch_detections(deployed: Model, runtime: OnnxModel, batch: int, size: int) -> None:
    images = resized(shapes_batch(batch, 320), size)
    with torch.no_grad():
        reference = deployed(images)[0].numpy()
    detections = runtime(images.numpy())
    assert detections.shape == reference.shape == (batch, 300, 6)
    for ref, out in zip(reference, detections):
        assert assert_same_detections(ref, out, size) >= 20
        # and the scores themselves, in order, within 1e-4
        assert np.abs(ref[:50, 4] - out[:50, 4]).max() < 1e-4
    # a torch tensor in gives a tensor out
    assert torch.equal(runtime(images), torch.from_numpy(detections))


def test_metadata_round_trips(detector: Model, dynamic_onnx, runtime: OnnxModel) -> None:
    meta = read_onnx_metadata(dynamic_onnx)
    assert (meta.task, meta.imgsz, meta.stride, meta.model, meta.zoo_version) == ("detect", (320, 320), 32, "yolov10n",
                                                                                   zoo.__version__)
    assert meta.names == detector.names and meta.max_det == 300 and meta.dynamic and meta.opset == 17
    assert meta.output_names == ["detections"] and meta.input_name == "images"
    assert meta.mean is None and meta.std is None and meta.resize == "letterbox"
    assert (runtime.task, runtime.names, runtime.imgsz, runtime.stride, runtime.dynamic) == (
        "detect", detector.names, (320, 320), 32, True)


def test_graph_holds_standard_onnx_ops_only(dynamic_onnx) -> None:
    """The oneDNN fast paths (torch.ops.mkldnn) that eager CPU inference uses stay out of the graph."""
    ops = graph_op_types(dynamic_onnx)
    assert {"::Conv", "::TopK", "::Softmax"} <= ops
    assert all(op.startswith("::") for op in ops), sorted(op for op in ops if not op.startswith("::"))
    assert not any("mkldnn" in op.lower() or "pointwise" in op.lower() for op in ops)


def test_export_leaves_the_model_as_it_was(detector: Model, dynamic_onnx) -> None:
    assert detector.head.cv2 is not None and not any(
        getattr(m, "conv1", 0) is None for m in detector.modules() if type(m).__name__ == "RepVGGDW")


def test_static_graph_refuses_another_shape_in_one_line(tmp_path) -> None:
    require_runtime()
    torch.manual_seed(0)
    path = Model(yaml.safe_load(TINY_DETECT)).export(imgsz=(64, 96), batch=2, file=tmp_path / "static.onnx")
    static = OnnxModel(path)
    assert static.imgsz == (64, 96) and static.batch == 2 and not static.dynamic
    assert static(np.zeros((2, 3, 64, 96), np.float32)).shape[::2] == (2, 6)
    with pytest.raises(ExportError, match="static graph for batch 2 at 64x96") as err:
        static(np.zeros((1, 3, 64, 96), np.float32))
    assert "\n" not in str(err.value)
