"""zoo.ops.anchors: anchor grids, distance <-> box encoding and the DFL expectation."""
from __future__ import annotations

import torch

from zoo.nn.yolov8 import DFL
from zoo.ops.anchors import box_to_distances, dfl_expectation, dist2bbox, grid_anchors, make_anchors
from zoo.ops.boxes import xyxy_to_xywh


def test_grid_anchors_are_cell_centres_level_by_level() -> None:
    points, strides = grid_anchors([(2, 3), (1, 1)], [8.0, 16.0], torch.device("cpu"), torch.float32)
    assert points.tolist() == [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5], [0.5, 0.5]]
    assert strides.squeeze(1).tolist() == [8.0] * 6 + [16.0]
    corners, _ = grid_anchors([(2, 2)], [4.0], torch.device("cpu"), torch.float32, offset=0.0)
    assert corners.tolist() == [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]


def test_make_anchors_reads_the_maps() -> None:
    feats = [torch.zeros(1, 5, 4, 6, dtype=torch.float64), torch.zeros(1, 5, 2, 3, dtype=torch.float64)]
    points, strides = make_anchors(feats, torch.tensor([8.0, 16.0]))
    expected = grid_anchors([(4, 6), (2, 3)], [8.0, 16.0], torch.device("cpu"), torch.float64)
    assert points.dtype == torch.float64
    assert torch.equal(points, expected[0]) and torch.equal(strides, expected[1])


def test_distances_and_boxes_are_inverse() -> None:
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(10, 2, generator=g) * 20
    dist = torch.rand(3, 10, 4, generator=g) * 5
    xyxy = dist2bbox(dist, anchors, xywh=False)
    torch.testing.assert_close(box_to_distances(anchors, xyxy), dist)
    assert torch.equal(dist2bbox(dist, anchors, xywh=True), xyxy_to_xywh(xyxy))
    # channel-major (B, 4, A) with (2, A) anchors gives the same boxes along dim 1
    torch.testing.assert_close(dist2bbox(dist.transpose(1, 2), anchors.T, xywh=True, dim=1),
                               dist2bbox(dist, anchors, xywh=True).transpose(1, 2))


def test_point_inside_box_iff_all_distances_positive() -> None:
    box = torch.tensor([0.0, 0.0, 4.0, 4.0])
    inside = box_to_distances(torch.tensor([[1.0, 1.0], [5.0, 1.0]]), box).amin(-1) > 0
    assert inside.tolist() == [True, False]


def test_dfl_expectation() -> None:
    bins = torch.arange(8, dtype=torch.float32)
    peaked = torch.full((2, 4, 8), -50.0)
    peaked[..., 3] = 50.0  # all the mass on bin 3
    torch.testing.assert_close(dfl_expectation(peaked.flatten(-2), bins), torch.full((2, 4), 3.0))
    logits = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    manual = (logits.view(5, 4, 8).softmax(-1) * bins).sum(-1)
    torch.testing.assert_close(dfl_expectation(logits, bins), manual)


def test_dfl_module_forward_and_expectation_agree() -> None:
    """The head's channel-major 1x1-conv form (Ultralytics) and the anchor-major op give the same distances."""
    dfl = DFL(16)
    x = torch.randn(2, 64, 30, generator=torch.Generator().manual_seed(2))  # (B, 4*16, A)
    torch.testing.assert_close(dfl(x), dfl.expectation(x.transpose(1, 2)).transpose(1, 2), rtol=1e-5, atol=1e-5)
