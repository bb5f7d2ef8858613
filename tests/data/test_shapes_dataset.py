"""The embedded shapes dataset: determinism, label consistency, configuration errors."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.data.shapes import SHAPE_NAMES, ShapesConfig, polygon_mask, render_shapes


def test_same_seed_same_pixels_and_labels() -> None:
    cfg = ShapesConfig(seed=3, size=(96, 128))
    a, b = render_shapes(cfg, "train", 5), render_shapes(cfg, "train", 5)
    assert a.image.shape == (96, 128, 3) and a.image.dtype == np.uint8
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_seed_split_and_index_change_the_sample() -> None:
    cfg = ShapesConfig(seed=0, size=(64, 64))
    base = render_shapes(cfg, "train", 0).image
    assert not np.array_equal(base, render_shapes(cfg, "train", 1).image)
    assert not np.array_equal(base, render_shapes(cfg, "val", 0).image)
    assert not np.array_equal(base, render_shapes(ShapesConfig(seed=1, size=(64, 64)), "train", 0).image)


def test_boxes_are_tight_around_visible_masks() -> None:
    cfg = ShapesConfig(seed=1, size=(128, 128))
    for i in range(10):
        s = render_shapes(cfg, "val", i)
        assert cfg.min_objects <= len(s.cls) <= cfg.max_objects
        assert s.masks.shape == (len(s.cls), 128, 128)
        assert ((s.cls >= 0) & (s.cls < len(SHAPE_NAMES))).all()
        for box, mask in zip(s.boxes, s.masks):
            ys, xs = np.nonzero(mask)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        # Visible masks never overlap: a later object hides what it covers.
        assert (s.masks.sum(0) <= 1).all()


def test_every_class_appears_and_classes_are_balanced() -> None:
    cfg = ShapesConfig(seed=0, size=(64, 64))
    counts = np.bincount(np.concatenate([render_shapes(cfg, "train", i).cls for i in range(60)]), minlength=5)
    assert (counts > 0.5 * counts.mean()).all(), counts


def test_polygon_mask_square() -> None:
    ys, xs = np.mgrid[0:10, 0:10] + 0.5
    square = np.array([[2, 2], [6, 2], [6, 7], [2, 7]], dtype=float)
    mask = polygon_mask(square, ys, xs)
    assert mask.sum() == 4 * 5 and mask[2:7, 2:6].all()


@pytest.mark.parametrize("options, message", [
    ({"size": "8"}, "size"), ({"min_objects": "3", "max_objects": "2"}, "min_objects"),
    ({"bogus": "1"}, "unknown option"), ({"names": "circle/hexagon"}, "names"),
])
def test_bad_options_raise_value_error(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShapesConfig.from_options(options)


def test_options_parse_types() -> None:
    cfg = ShapesConfig.from_options({"n_train": "10", "size": "96x128", "noise": "2.5", "names": "circle/star"})
    assert cfg.n_train == 10 and cfg.size == (96, 128) and cfg.noise == 2.5 and cfg.names == ("circle", "star")
    s = render_shapes(cfg, "train", 0)
    assert set(s.cls.tolist()) <= {0, 1}
