"""TorchScript export: the archive round-trips its metadata, holds no oneDNN fast-path calls and gives
the PyTorch deploy model's output, at another batch and size too."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

import zoo
from zoo import Model
from zoo.export import ExportError, TorchScriptModel, load_exported
from zoo.export.torchscript import load_torchscript
from zoo.nn import fast_cpu

from export_helpers import resized, shapes_batch


@pytest.fixture(scope="module")
def classifier() -> Model:
    torch.manual_seed(0)
    return Model("mobilevit-xxs-cls").eval()


def test_round_trip(classifier: Model, tmp_path) -> None:
    path = classifier.export(format="torchscript", imgsz=256, dynamic=True, file=tmp_path / "mvit.torchscript")
    module, meta = load_torchscript(path)
    assert (meta.task, meta.imgsz, meta.stride, meta.format, meta.model, meta.zoo_version) == (
        "classify", (256, 256), 32, "torchscript", "mobilevit-xxs-cls", zoo.__version__)
    assert meta.names == classifier.names and meta.opset is None
    # traced with the CPU fast paths off: plain aten ops only
    kinds = {node.kind() for node in module.inlined_graph.nodes()}
    assert "aten::_convolution" in kinds or "aten::conv2d" in kinds
    assert not any("mkldnn" in kind for kind in kinds), sorted(k for k in kinds if "mkldnn" in k)
    runtime = load_exported(path)
    assert isinstance(runtime, TorchScriptModel) and runtime.task == "classify"
    deployed = copy.deepcopy(classifier).deploy().eval()
    for batch, size in [(1, 256), (2, 224)]:  # 224: the last stage's 7x7 map needs the patch resize
        images = resized(shapes_batch(batch, 256), size)
        with torch.no_grad():
            reference = deployed(images).softmax(-1)
        probs = runtime(images)
        assert isinstance(probs, torch.Tensor) and probs.shape == (batch, 1000)
        assert (probs - reference).abs().max() < 1e-5
    with pytest.raises(ExportError, match="not a multiple of the stride 32"):
        runtime(np.zeros((1, 3, 240, 240), np.float32))


def test_a_plain_torchscript_file_is_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "plain.torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(torch.nn.Conv2d(3, 4, 1), torch.zeros(1, 3, 8, 8)), str(path))
    with pytest.raises(ExportError, match="without zoo metadata"):
        load_torchscript(path)


def test_the_cpu_fast_paths_are_off_while_a_graph_is_recorded() -> None:
    """A fused conv + SiLU runs as one oneDNN call in eager inference, and as plain ops in what
    torch.jit.trace (TorchScript, the ONNX exporter zoo uses) and torch.export record."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this torch build: the fast paths are never on")
    block = _ConvSiLU().eval()
    x = torch.rand(1, 4, 8, 8)
    with torch.no_grad():
        assert fast_cpu.usable(x, block.conv.weight)  # eager: on
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = {node.kind() for node in torch.jit.trace(block, (x,)).inlined_graph.nodes()}
            exported = {str(node.target) for node in torch.export.export(block, (x,)).graph.nodes}
    assert any("conv" in op for op in traced) and any("conv" in op for op in exported)
    assert not any("mkldnn" in op for op in traced | exported), sorted(traced | exported)


class _ConvSiLU(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.act = torch.nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_cpu.conv_act(x, self.conv, self.act)
