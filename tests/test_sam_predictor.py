"""SamPredictor and the SAM overlay command: resizing/padding, prompt mapping, masks at the original size."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo import Model
from zoo.commands.predict_sam import parse_box, parse_point, predict_sam
from zoo.nn.sam import PIXEL_MEAN
from zoo.sam_predictor import SamPredictor, resized_shape

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "cfg" / "sam-tinyvit.yaml"
SIZE = 128  # small model input keeps the encoder fast on CPU; any multiple of 16 works


@pytest.fixture(scope="module")
def model() -> Model:
    torch.manual_seed(0)
    return Model(CFG).eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(150, 230, 3), dtype=np.uint8)
    img[40:110, 60:170] = (250, 30, 30)  # a flat object
    return img


@pytest.fixture(scope="module")
def predictor(model: Model, image: np.ndarray) -> SamPredictor:
    p = SamPredictor(model, input_size=SIZE)
    p.set_image(image)
    return p


def test_round_trip_non_square(predictor: SamPredictor, image: np.ndarray) -> None:
    masks, scores, low = predictor.predict(np.array([[100.0, 75.0]]), np.array([1]), multimask_output=True)
    assert masks.shape == (3, *image.shape[:2]) and masks.dtype == bool
    assert scores.shape == (3,) and low.shape == (3, SIZE // 4, SIZE // 4)
    masks, scores, _ = predictor.predict(box=np.array([60, 40, 170, 110]), multimask_output=False)
    assert masks.shape == (1, *image.shape[:2]) and scores.shape == (1,)
    logits, _, _ = predictor.predict(box=np.array([60, 40, 170, 110]), multimask_output=False, return_logits=True)
    assert logits.dtype == np.float32 and np.array_equal(logits > 0.0, masks)


def test_matches_model_forward_in_input_frame(model: Model, predictor: SamPredictor, image: np.ndarray) -> None:
    point = np.array([[100.0, 75.0], [20.0, 140.0]])
    _, scores, low = predictor.predict(point, np.array([1, 0]))
    h, w = resized_shape(*image.shape[:2], SIZE)
    scaled = torch.tensor(point * [w / image.shape[1], h / image.shape[0]], dtype=torch.float32)[None]
    with torch.no_grad():
        ref_masks, ref_iou = model(predictor.preprocess(image), points=scaled, labels=torch.tensor([[1, 0]]))
    np.testing.assert_allclose(low, ref_masks[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(scores, ref_iou[0].numpy(), atol=1e-5)


def test_preprocess_resizes_longest_side_and_pads(predictor: SamPredictor) -> None:
    flat = np.empty((150, 230, 3), dtype=np.uint8)
    flat[:] = np.round(PIXEL_MEAN).astype(np.uint8)
    x = predictor.preprocess(flat)
    assert x.shape == (1, 3, SIZE, SIZE)
    h, w = resized_shape(150, 230, SIZE)
    assert (h, w) == (83, 128)
    assert x[..., h:, :].abs().max() == 0  # bottom padding
    assert x[..., :h, :w].abs().max() < 0.01  # mean colour normalises to ~0
    bright = predictor.preprocess(np.full((150, 230, 3), 255, dtype=np.uint8))
    assert bright[..., :h, :w].min() > 2.0 and bright[..., h:, :].abs().max() == 0


def test_postprocess_crops_padding(predictor: SamPredictor) -> None:
    h, _ = predictor.input_shape
    low = torch.full((1, 1, SIZE // 4, SIZE // 4), -10.0)
    low[..., (h + 8) // 4:, :] = 10.0  # positive only inside the bottom padding
    assert not (predictor.postprocess(low) > 0).any()
    low[...] = 10.0
    full = predictor.postprocess(low)
    assert full.shape == (1, 1, 150, 230) and (full > 0).all()


def test_mask_input_and_prompt_sets(predictor: SamPredictor, image: np.ndarray) -> None:
    _, scores, low = predictor.predict(np.array([[100.0, 75.0]]), np.array([1]))
    masks, _, _ = predictor.predict(np.array([[100.0, 75.0]]), np.array([1]),
                                    mask_input=low[int(np.argmax(scores))][None], multimask_output=False)
    assert masks.shape == (1, *image.shape[:2])
    boxes = np.array([[60, 40, 170, 110], [0, 0, 50, 50]], dtype=np.float64)
    masks, scores, low = predictor.predict_sets(boxes=boxes, multimask_output=False)
    assert masks.shape == (2, 1, *image.shape[:2]) and scores.shape == (2, 1)
    assert low.shape == (2, 1, SIZE // 4, SIZE // 4)
    one, _, _ = predictor.predict(box=boxes[1], multimask_output=False, return_logits=True)
    many, _, _ = predictor.predict_sets(boxes=boxes, multimask_output=False, return_logits=True)
    np.testing.assert_allclose(many[1], one, atol=1e-4)


def test_errors(model: Model) -> None:
    p = SamPredictor(model, input_size=SIZE)
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict(box=np.array([0, 0, 10, 10]))
    with pytest.raises(ValueError, match="uint8"):
        p.set_image(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="multiple of 16"):
        SamPredictor(model, input_size=250)
    with pytest.raises(TypeError, match="SamHead"):
        SamPredictor(Model({"backbone": [[-1, 1, "Conv", [8, 3, 2]]]}))


def test_predict_sam_writes_overlay(model: Model, image: np.ndarray, tmp_path: Path) -> None:
    src = tmp_path / "photo.png"
    Image.fromarray(image).save(src)
    out = predict_sam(model, src, [parse_point("100,75"), parse_point("20,140,0")], [parse_box("60,40,170,110")],
                      tmp_path / "out", input_size=SIZE)
    assert out == tmp_path / "out" / "photo_sam.png" and out.exists()
    drawn = np.asarray(Image.open(out))
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    out = predict_sam(model, src, [], [(60, 40, 170, 110), (0, 0, 50, 50)], tmp_path / "out2", input_size=SIZE)
    assert Image.open(out).size == (230, 150)
    with pytest.raises(ValueError, match="at least one prompt"):
        predict_sam(model, src, [], [], tmp_path, input_size=SIZE)


def test_parse_prompts() -> None:
    assert parse_point("3,4") == (3.0, 4.0, 1) and parse_point("3,4,0") == (3.0, 4.0, 0)
    assert parse_box("1,2,3,4") == (1.0, 2.0, 3.0, 4.0)
    import argparse

    for bad in ("3", "3,4,2", "a,b"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_point(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_box("5,5,1,1")
