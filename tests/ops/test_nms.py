"""Pure-torch greedy NMS and per-class NMS against a plain Python reference."""
from __future__ import annotations

import pytest
import torch

from zoo.ops.nms import batched_nms, nms


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / (union + 1e-7)


def reference_nms(boxes: list[list[float]], scores: list[float], thresh: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order
    kept: list[int] = []
    for i in order:
        if all(_iou(boxes[k], boxes[i]) <= thresh for k in kept):
            kept.append(i)
    return kept


def _random_boxes(gen: torch.Generator, n: int) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 100
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 40 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thresh", [0.3, 0.5, 0.7])
def test_nms_matches_reference(seed: int, thresh: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    boxes = _random_boxes(gen, 60)
    scores = torch.randint(0, 8, (60,), generator=gen).double()  # many ties
    got = nms(boxes, scores, thresh).tolist()
    assert got == reference_nms(boxes.tolist(), scores.tolist(), thresh)


def test_nms_chain_and_duplicates() -> None:
    # A suppresses B, B would suppress C, but B is gone so C stays (greedy, not "fast NMS")
    boxes = torch.tensor([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10], [0, 0, 10, 10]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.9], dtype=torch.float64)
    assert nms(boxes, scores, 0.4).tolist() == reference_nms(boxes.tolist(), scores.tolist(), 0.4) == [0, 2]


def test_nms_empty_and_shape_errors() -> None:
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).tolist() == []
    with pytest.raises(ValueError):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)


@pytest.mark.parametrize("seed", range(4))
def test_batched_nms_is_nms_per_class(seed: int) -> None:
    gen = torch.Generator().manual_seed(100 + seed)
    boxes = _random_boxes(gen, 80) - 50  # negative coordinates too
    scores = torch.rand(80, generator=gen, dtype=torch.float64)
    classes = torch.randint(0, 4, (80,), generator=gen) * 7  # sparse class ids
    got = batched_nms(boxes, scores, classes, 0.5)
    expected = []
    for c in classes.unique().tolist():
        idx = (classes == c).nonzero().flatten()
        expected += [int(idx[k]) for k in reference_nms(boxes[idx].tolist(), scores[idx].tolist(), 0.5)]
    assert sorted(got.tolist()) == sorted(expected)
    assert torch.all(scores[got][:-1] >= scores[got][1:])  # by descending score
    # overlapping boxes in different classes both survive
    same = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=torch.float32)
    assert batched_nms(same, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5).tolist() == [0, 1]
    assert batched_nms(same, torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), 0.5).tolist() == [0]
