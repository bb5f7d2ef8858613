"""RT-DETR end to end in ONNX: detections (B, K, 6) come out of the graph and ONNX Runtime gives the
PyTorch eval output within 1e-4 (same boxes, scores and classes), at batch 1 and 2 and two image
sizes from one dynamic graph, on the rtdetr-tiny fixture (HGNet stem / blocks, AIFI, RepC3 and the
deformable decoder with Ultralytics' weights)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from zoo import Model
from zoo.errors import ConfigError
from zoo.export import OnnxModel, export_model
from zoo.export.graphs import deployed_copy
from zoo.export.onnx import graph_op_types
from zoo.nn.deformable_attention import deformable_sample_projected, grid_sample_projected
from zoo_test_paths import fixture_dir

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime checks need the onnxruntime package")
pytest.importorskip("onnx", reason="ONNX export needs the onnx package")

ATOL = 1e-4


@pytest.fixture(scope="module")
def rtdetr() -> tuple[Model, dict]:
    folder = fixture_dir("rtdetr-tiny")
    model = Model(folder / "model.yaml").eval()
    state = torch.load(folder / "state_dict.pt", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model, torch.load(folder / "io.pt", weights_only=True)


@pytest.fixture(scope="module")
def dynamic_graph(rtdetr, tmp_path_factory) -> OnnxModel:
    model, _ = rtdetr
    path = export_model(model, "onnx", imgsz=256, dynamic=True, file=tmp_path_factory.mktemp("rt") / "t.onnx")
    return OnnxModel(path)


def assert_same_detections(got: np.ndarray, expected: torch.Tensor, atol: float = ATOL) -> None:
    """Same rows up to the order of tied scores: an untrained-ish head gives many (query, class)
    pairs whose scores differ in the 7th digit, and two runtimes may sort those either way. Every
    row of ``got`` must match an unused row of ``expected`` with the same class and box and score
    within ``atol``; a row tied with the K-th score may have been cut for its twin in either."""
    expected = expected.numpy()
    assert got.shape == expected.shape
    assert np.abs(got[..., 4] - expected[..., 4]).max() <= atol  # the sorted scores themselves
    for image_got, image_expected in zip(got, expected):
        unused = np.ones(len(image_expected), bool)
        last_score = image_expected[-1, 4]
        for row in image_got:
            close = (np.abs(image_expected - row) <= atol).all(-1) & unused
            if close.any():
                unused[np.flatnonzero(close)[0]] = False
            else:
                assert row[4] - last_score <= atol, f"no PyTorch detection matches {row}"


@pytest.mark.parametrize("batch, size", [(1, (256, 256)), (2, (256, 256)), (2, (320, 192))])
def test_dynamic_graph_matches_pytorch(rtdetr, dynamic_graph: OnnxModel, batch: int, size: tuple[int, int]) -> None:
    model, io = rtdetr
    torch.manual_seed(batch)
    images = io["input"] if batch == 1 else torch.rand(batch, 3, *size)
    got = dynamic_graph(images.numpy())
    with torch.no_grad():
        expected, _ = model(images)
    assert got.shape == (batch, 300, 6)
    assert_same_detections(got, expected)


def test_graph_holds_the_standard_ops_and_metadata(dynamic_graph: OnnxModel) -> None:
    ops = graph_op_types(dynamic_graph.path)
    assert {"::GridSample", "::TopK"} <= ops  # deformable sampling and the NMS-free top-k are in the graph
    assert not any("mkldnn" in op.lower() or op.endswith("::Loop") for op in ops)  # no fast path, no unrolled bag
    assert all(op.startswith("::") for op in ops)  # standard domain only: any ONNX runtime runs it
    assert dynamic_graph.task == "detect" and dynamic_graph.dynamic and dynamic_graph.metadata.max_det == 300


def test_static_graph_from_model_export(rtdetr, tmp_path) -> None:
    """Model.export at a non-square static size, compared with the deployed (BN-folded) PyTorch copy
    that was traced and with the model as it was."""
    model, _ = rtdetr
    path = model.export(imgsz=(192, 320), file=tmp_path / "rt.onnx")
    exported = OnnxModel(path)
    images = torch.rand(1, 3, 192, 320, generator=torch.Generator().manual_seed(3))
    got = exported(images.numpy())
    with torch.no_grad():
        deployed, _ = deployed_copy(model)(images)
        original, _ = model(images)
    assert_same_detections(got, deployed)
    assert_same_detections(got, original)


def test_opset_without_grid_sample_is_refused(rtdetr, tmp_path) -> None:
    model, _ = rtdetr
    # the row, the op, and the fix: an opset that has GridSample
    with pytest.raises(ConfigError, match=r"RTDETRDecoder .*grid_sampler; GridSample needs opset 16\+: use --opset 16"):
        export_model(model, "onnx", imgsz=128, opset=15, file=tmp_path / "rt.onnx")


@pytest.mark.parametrize("batch, masked", [(1, False), (2, True)])
def test_traced_sampling_form_equals_the_eager_one(batch: int, masked: bool) -> None:
    """The grid_sample form used while exporting gives the embedding_bag form's values."""
    torch.manual_seed(batch)
    shapes = [(8, 10), (4, 5), (2, 3)]
    tokens = sum(h * w for h, w in shapes)
    memory = torch.randn(batch, tokens, 32)
    proj = nn.Linear(32, 32)
    nn.init.normal_(proj.bias)
    locations = torch.rand(batch, 7, 4, 3, 2, 2) * 1.4 - 0.2  # some samples off the map
    weights = torch.rand(batch, 7, 4, 3, 2)
    mask = torch.rand(batch, tokens) < 0.3 if masked else None
    with torch.no_grad():
        eager = deformable_sample_projected(memory, shapes, locations, weights, proj, mask)
        traced_form = grid_sample_projected(memory, shapes, locations, weights, proj, mask)
    torch.testing.assert_close(traced_form, eager, atol=1e-5, rtol=1e-5)
