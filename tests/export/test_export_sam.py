"""SAM as two ONNX graphs (zoo.export.sam): ONNX Runtime equals the PyTorch modules within 1e-4 on
the MobileSAM fixture weights, for the encoder (batch 1 and 2, two sizes) and the prompt decoder
(1 and 3 points, with and without a box, with a mask input, batch 2, another embedding size)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zoo import Model
from zoo.errors import ConfigError
from zoo.export import ExportError
from zoo.export.sam import (
    DECODER_INPUTS, ENCODER_INPUTS, SamPromptDecoder, export_sam, export_sam_timed, prompt_arrays,
)
from zoo_test_paths import CFG, fixture_dir

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime checks need the onnxruntime package")
onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx package")

ATOL = 1e-4


@pytest.fixture(scope="module")
def sam():
    folder = fixture_dir("mobile_sam")
    model = Model(CFG / "sam-tinyvit.yaml")
    model.load(folder / "mobile_sam.pt", verbose=False)
    return model.eval(), torch.load(folder / "io.pt", weights_only=True)


@pytest.fixture(scope="module")
def sessions(sam, tmp_path_factory):
    model, _ = sam
    written = export_sam_timed(model, tmp_path_factory.mktemp("sam") / "mobile_sam", dynamic=True)
    assert written.encoder.name == "mobile_sam-encoder.onnx" and written.decoder.name == "mobile_sam-decoder.onnx"
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's warnings about renamed subgraph inputs are noise here
    return tuple(ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                 for p in (written.encoder, written.decoder)), written


def _embed(model: Model, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        _, kept = model.run_rows(images, keep=(len(model.records) - 2,))
    return kept[len(model.records) - 2]


def _max_diff(got: np.ndarray, expected: torch.Tensor) -> float:
    assert got.shape == tuple(expected.shape)
    return float(np.abs(got - expected.numpy()).max())


# ----------------------------------------------------------------------------------------- graphs


def test_graph_interfaces(sessions) -> None:
    (encoder, decoder), written = sessions
    assert [i.name for i in encoder.get_inputs()] == list(ENCODER_INPUTS)
    assert [i.name for i in decoder.get_inputs()] == list(DECODER_INPUTS)
    assert [o.name for o in decoder.get_outputs()] == ["masks", "iou_predictions"]
    points = decoder.get_inputs()[1].shape
    assert isinstance(points[0], str) and isinstance(points[1], str)  # batch and point count are dynamic
    for path in (written.encoder, written.decoder):
        graph = onnx.load(str(path), load_external_data=False)
        ops = {node.op_type for node in graph.graph.node}
        assert not any("mkldnn" in op.lower() for op in ops)  # the CPU fast paths stay out of the graph
        props = {p.key: p.value for p in graph.metadata_props}
        assert props["task"] == "segment" and props["stride"] == "16" and props["imgsz"] == "[1024, 1024]"
        np.testing.assert_allclose(json.loads(props["pixel_mean"]), [123.675 / 255, 116.28 / 255, 103.53 / 255])
    assert {p.key: p.value for p in onnx.load(str(written.decoder), load_external_data=False).metadata_props}[
        "graph"] == "prompt_decoder"


def test_encoder_matches_pytorch(sam, sessions) -> None:
    model, io = sam
    (encoder, _), _ = sessions
    got = encoder.run(None, {"images": io["image"].numpy()})[0]
    assert got.shape == (1, 256, 64, 64)
    assert _max_diff(got, _embed(model, io["image"])) < ATOL
    assert _max_diff(got, io["image_embeddings"]) < 1e-3  # and the reference's own embedding

    torch.manual_seed(0)
    pair = torch.randn(2, 3, 256, 384)  # batch 2 at another (non-square) size: the dynamic axes
    got = encoder.run(None, {"images": pair.numpy()})[0]
    assert got.shape == (2, 256, 16, 24)
    assert _max_diff(got, _embed(model, pair)) < ATOL


def _decode(decoder, embeddings: torch.Tensor, coords: np.ndarray, labels: np.ndarray,
            mask: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    b, _, h, w = embeddings.shape
    mask_input = np.zeros((b, 1, 4 * h, 4 * w), np.float32) if mask is None else mask.numpy()
    has_mask = np.full((b,), 0.0 if mask is None else 1.0, np.float32)
    return tuple(decoder.run(None, {"image_embeddings": embeddings.numpy(), "point_coords": coords,
                                    "point_labels": labels, "mask_input": mask_input, "has_mask_input": has_mask}))


@pytest.mark.parametrize("n_points, with_box", [(1, False), (3, False), (1, True), (3, True), (0, True)])
def test_decoder_matches_sam_head(sam, sessions, n_points: int, with_box: bool) -> None:
    model, io = sam
    (_, decoder), _ = sessions
    head = model.model[-1]
    embeddings = io["image_embeddings"]
    points = torch.tensor([[[500.0, 375.0], [120.0, 640.0], [880.0, 210.5]][:n_points]])
    labels = torch.tensor([[1.0, 0.0, 1.0][:n_points]])
    box = io["box"] if with_box else None
    coords, kinds = prompt_arrays(points[0] if n_points else None, labels[0] if n_points else None,
                                  None if box is None else box[0])
    masks, iou = _decode(decoder, embeddings, coords, kinds)
    with torch.no_grad():
        expected_masks, expected_iou = head(embeddings, points=points if n_points else None,
                                            labels=labels if n_points else None, boxes=box)
    assert masks.shape == (1, 3, 256, 256) and iou.shape == (1, 3)
    assert _max_diff(masks, expected_masks) < ATOL and _max_diff(iou, expected_iou) < ATOL
    if n_points == 2 and not with_box:
        assert _max_diff(masks, io["point_masks"]) < 1e-3


def test_decoder_mask_input_batch_and_size(sam, sessions) -> None:
    """A previous mask as input, two prompt sets at once (row b reads embedding b), and a second
    embedding size (a 512 input) through the dynamic axes."""
    model, io = sam
    (_, decoder), _ = sessions
    head = model.model[-1]
    torch.manual_seed(1)
    embeddings = torch.cat([io["image_embeddings"], torch.randn(1, 256, 64, 64)])
    previous = io["point_masks"][:, :1].expand(2, 1, 256, 256).contiguous()
    points = torch.tensor([[[500.0, 375.0], [120.0, 640.0]], [[10.0, 20.0], [1000.0, 999.0]]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    pairs = [prompt_arrays(points[b], labels[b]) for b in range(2)]
    coords, kinds = (np.concatenate([p[i] for p in pairs]) for i in (0, 1))
    masks, iou = _decode(decoder, embeddings, coords, kinds, previous)
    with torch.no_grad():
        expected = head(embeddings, points=points, labels=labels, mask_inputs=previous)
    assert _max_diff(masks, expected[0]) < ATOL and _max_diff(iou, expected[1]) < ATOL

    small = torch.randn(1, 256, 32, 32)
    coords, kinds = prompt_arrays([[300.0, 100.0]], [1], box=[50.0, 60.0, 400.0, 380.0])
    masks, iou = _decode(decoder, small, coords, kinds)
    with torch.no_grad():
        expected = head(small, points=torch.tensor([[[300.0, 100.0]]]), labels=torch.ones(1, 1),
                        boxes=torch.tensor([[50.0, 60.0, 400.0, 380.0]]))
    assert masks.shape == (1, 3, 128, 128)
    assert _max_diff(masks, expected[0]) < ATOL and _max_diff(iou, expected[1]) < ATOL


# ----------------------------------------------------------------------------------------- modules


def test_single_mask_decoder_module_matches_sam_head(sam) -> None:
    model, io = sam
    head = model.model[-1]
    decoder = SamPromptDecoder(head, multimask_output=False)
    coords, kinds = prompt_arrays(box=io["box"][0])
    with torch.no_grad():
        masks, iou = decoder(io["image_embeddings"], torch.from_numpy(coords), torch.from_numpy(kinds),
                             torch.zeros(1, 1, 256, 256), torch.zeros(1))
        expected_masks, expected_iou = head(io["image_embeddings"], boxes=io["box"], multimask_output=False)
    assert masks.shape == (1, 1, 256, 256)
    torch.testing.assert_close(masks, expected_masks, atol=1e-5, rtol=0)
    torch.testing.assert_close(iou, expected_iou, atol=1e-6, rtol=0)
    assert (masks - io["box_masks"]).abs().max() < 1e-3
    with pytest.raises(ValueError, match="one prompt set per embedding"):
        decoder(io["image_embeddings"], torch.zeros(2, 1, 2), torch.ones(2, 1), torch.zeros(1, 1, 256, 256),
                torch.zeros(1))


def test_prompt_arrays_follow_segment_anything() -> None:
    coords, labels = prompt_arrays([[1, 2], [3, 4]], [1, 0])
    np.testing.assert_array_equal(coords, [[[1, 2], [3, 4], [0, 0]]])
    np.testing.assert_array_equal(labels, [[1, 0, -1]])  # no box: one padding point
    coords, labels = prompt_arrays([[1, 2]], [1], box=[5, 6, 7, 8])
    np.testing.assert_array_equal(coords, [[[1, 2], [5, 6], [7, 8]]])
    np.testing.assert_array_equal(labels, [[1, 2, 3]])  # the box as its two labelled corners
    assert coords.dtype == labels.dtype == np.float32
    with pytest.raises(ValueError, match="2 points but 1 labels"):
        prompt_arrays([[1, 2], [3, 4]], [1])


def test_refusals(tmp_path) -> None:
    detector = Model({"nc": 2, "backbone": [[-1, 1, "Conv", [8, 3, 2]]], "head": [[-1, 1, "ClassifierHead", ["nc"]]]})
    with pytest.raises(ExportError, match="SamHead"):
        export_sam(detector, tmp_path)
    model = Model(CFG / "sam-tinyvit.yaml", trial_run=False)
    with pytest.raises(ConfigError, match="--imgsz 1000 is not a multiple of the model's stride 16"):
        export_sam(model, tmp_path, imgsz=1000)
