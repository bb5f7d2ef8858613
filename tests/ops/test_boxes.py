"""zoo.ops.boxes: format conversions and overlap measures."""
from __future__ import annotations

import pytest
import torch

from zoo.ops.boxes import (
    box_area, ciou, corners_to_xywh, elementwise_iou, giou, pairwise_giou, pairwise_iou, xywh_to_xyxy, xyxy_to_xywh,
)


def _random_xyxy(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    return torch.cat((xy, xy + 1 + torch.rand(n, 2, generator=g) * 30), -1)


def test_conversions_known_values_and_round_trip() -> None:
    xywh = torch.tensor([[10.0, 20.0, 4.0, 6.0]])
    assert xywh_to_xyxy(xywh).tolist() == [[8.0, 17.0, 12.0, 23.0]]
    assert xyxy_to_xywh(xywh_to_xyxy(xywh)).tolist() == xywh.tolist()
    boxes = _random_xyxy(20)
    torch.testing.assert_close(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)


def test_conversions_along_another_dim() -> None:
    boxes = _random_xyxy(7)
    channel_major = boxes.T[None]  # (1, 4, 7), the head's layout
    assert torch.equal(xyxy_to_xywh(channel_major, dim=1), xyxy_to_xywh(boxes).T[None])
    assert torch.equal(xywh_to_xyxy(channel_major, dim=1), xywh_to_xyxy(boxes).T[None])


def test_extra_columns_are_dropped_and_corners_match() -> None:
    boxes = torch.cat((_random_xyxy(5), torch.rand(5, 2)), -1)  # e.g. score and class after the box
    assert xyxy_to_xywh(boxes).shape == (5, 4)
    assert torch.equal(corners_to_xywh(boxes[:, :2], boxes[:, 2:4]), xyxy_to_xywh(boxes))


def test_area_and_iou() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert box_area(torch.tensor([[0.0, 0.0, 2.0, 3.0], [5.0, 5.0, 4.0, 4.0]])).tolist() == [6.0, 0.0]
    iou = pairwise_iou(a, b)
    assert iou.shape == (1, 2)
    assert iou[0, 0].item() == pytest.approx(1 / 3, abs=1e-6) and iou[0, 1].item() == 0.0
    many = _random_xyxy(6, seed=1)
    torch.testing.assert_close(elementwise_iou(many, many.flip(0)), pairwise_iou(many, many.flip(0)).diagonal())


def test_giou_and_ciou() -> None:
    boxes = _random_xyxy(8, seed=2)
    other = _random_xyxy(8, seed=3)
    assert torch.allclose(giou(boxes, boxes), torch.ones(8), atol=1e-5)
    assert torch.allclose(ciou(boxes, boxes), torch.ones(8), atol=1e-5)
    g, c = giou(boxes, other), ciou(boxes, other)
    assert (g > -1).all() and (g <= elementwise_iou(boxes, other) + 1e-6).all()
    assert (c > -1.5).all() and (c <= elementwise_iou(boxes, other) + 1e-6).all()
    torch.testing.assert_close(pairwise_giou(boxes, other).diagonal(), g)
