"""Classifiers to ONNX: probabilities equal the PyTorch deploy model's (timm weights from the fixtures)
at batch 1 and 2 and two image sizes from one dynamic graph (sizes where TinyViT's windows need
padding and MobileViT's patches a resize, which the graph must do by the input's size); the cfg's
normalisation inside the graph."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml

from zoo import Model
from zoo.data.normalise import InputNormaliser
from zoo.export import OnnxModel
from zoo.export.onnx import graph_op_types, read_onnx_metadata

from export_helpers import pytorch_eval, require_runtime, resized, shapes_batch
from tiny_cfgs import TINY_CLASSIFIER
from zoo_test_paths import fixture_dir

# cfg, fixture folder, size exported at, (batch, size) pairs run: the second size changes the
# padding / resize branches the first one takes
CLASSIFIERS = [
    ("mobilevit-xxs-cls", "mobilevit_xxs", 256, [(1, 256), (2, 224)]),
    ("tinyvit-5m-cls", "tiny_vit_5m_224", 224, [(1, 224), (2, 256)]),
]


@pytest.mark.parametrize("cfg, folder, size, runs", CLASSIFIERS, ids=[c[0] for c in CLASSIFIERS])
def test_probabilities_match_pytorch(cfg: str, folder: str, size: int, runs: list, tmp_path) -> None:
    require_runtime()
    model = Model(cfg).eval()
    model.load(fixture_dir(folder) / "state_dict.pt", verbose=False).require_fit("the fixture must fit")
    path = model.export(imgsz=size, dynamic=True, file=tmp_path / f"{cfg}.onnx")
    runtime = OnnxModel(path)
    assert runtime.task == "classify" and runtime.imgsz == (size, size) and runtime.stride == 32
    deployed = copy.deepcopy(model).deploy().eval()
    for batch, run_size in runs:
        images = resized(shapes_batch(batch, 256), run_size)
        with torch.no_grad():
            reference = deployed(images).softmax(-1).numpy()
        probs = runtime(images.numpy())
        assert probs.shape == reference.shape == (batch, 1000)
        assert np.abs(probs - reference).max() < 1e-4
        # the small probabilities too: log-probabilities (logit differences) within 1e-4
        assert np.abs(np.log(probs) - np.log(reference)).max() < 1e-4
        assert (probs.argmax(1) == reference.argmax(1)).all()
    assert all(op.startswith("::") for op in graph_op_types(path))


def test_the_cfgs_normalisation_is_inside_the_graph(tmp_path) -> None:
    require_runtime()
    cfg = yaml.safe_load(TINY_CLASSIFIER) | {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    torch.manual_seed(0)
    model = Model(cfg).eval()
    path = model.export(imgsz=64, file=tmp_path / "tiny.onnx")
    meta = read_onnx_metadata(path)
    assert meta.mean == pytest.approx(cfg["mean"]) and meta.std == pytest.approx(cfg["std"])
    assert meta.resize == "center_crop" and meta.input_scale == pytest.approx(1 / 255)
    pixels = torch.randint(0, 256, (1, 3, 64, 64), generator=torch.Generator().manual_seed(1))
    # what zoo predict feeds the PyTorch model, and what a runtime feeds the graph: pixels / 255
    reference = pytorch_eval(model, InputNormaliser.for_model(model)(pixels)).softmax(-1).numpy()
    probs = OnnxModel(path)(pixels.float().numpy() / 255.0)
    assert np.abs(probs - reference).max() < 1e-6


def test_half_export_takes_and_gives_float16(tmp_path) -> None:
    require_runtime()
    torch.manual_seed(0)
    model = Model(yaml.safe_load(TINY_CLASSIFIER)).eval()
    path = model.export(imgsz=64, half=True, file=tmp_path / "half.onnx")
    runtime = OnnxModel(path)
    assert runtime.half and runtime.session.get_inputs()[0].type == "tensor(float16)"
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    probs = runtime(images.numpy())
    assert probs.dtype == np.float16
    reference = pytorch_eval(model, images).softmax(-1).numpy()
    assert np.abs(probs.astype(np.float32) - reference).max() < 2e-3  # float16 rounding, not a different model
