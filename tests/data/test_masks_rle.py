"""Our COCO RLE codec against pycocotools (a dev dependency), and polygon filling."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.data.masks import mask_to_box, polygons_to_mask, rle_decode, rle_encode, segmentation_to_mask

mask_api = pytest.importorskip("pycocotools.mask")


def _random_masks(rng: np.random.Generator, n: int):
    for t in range(n):
        h, w = rng.integers(1, 50, 2)
        if t % 3 == 0:
            m = np.zeros((h, w), bool)
            m[rng.integers(0, h):, rng.integers(0, w):] = True
        else:
            m = rng.random((h, w)) < rng.random()
        yield m


def test_encode_matches_pycocotools_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    for m in _random_masks(rng, 150):
        ref = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        ours = rle_encode(m)
        assert ours["counts"] == ref["counts"].decode()
        assert ours["size"] == list(m.shape)
        np.testing.assert_array_equal(rle_decode(ref), m)
        np.testing.assert_array_equal(rle_decode(rle_encode(m, compress=False)), m)


def test_large_counts_round_trip() -> None:
    m = np.zeros((600, 700), bool)
    m[5:590, 100:650] = True
    ref = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
    np.testing.assert_array_equal(rle_decode(ref), m)
    assert rle_encode(m)["counts"] == ref["counts"].decode()


def test_polygon_matches_pycocotools_area_roughly() -> None:
    poly = [10.0, 10.0, 60.0, 12.0, 40.0, 50.0]
    ours = polygons_to_mask([poly], 64, 80)
    ref = mask_api.decode(mask_api.merge(mask_api.frPyObjects([poly], 64, 80))).astype(bool)
    # Rasterisers differ on edge pixels only.
    assert abs(int(ours.sum()) - int(ref.sum())) <= 0.1 * ref.sum()
    assert (ours & ref).sum() / (ours | ref).sum() > 0.9


def test_segmentation_forms_and_errors() -> None:
    m = np.zeros((8, 9), bool)
    m[2:5, 3:7] = True
    np.testing.assert_array_equal(segmentation_to_mask(rle_encode(m, compress=False), 8, 9), m)
    np.testing.assert_array_equal(segmentation_to_mask(rle_encode(m), 8, 9), m)
    assert mask_to_box(m).tolist() == [3, 2, 7, 5]
    assert mask_to_box(np.zeros((4, 4), bool)).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="add up"):
        rle_decode({"size": [8, 9], "counts": [3, 4]})
