"""RT-DETR loss: the assignment solver, matching, denoising bookkeeping, a training step (arXiv:2304.08069)."""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import pytest
import torch

import zoo.nn  # noqa: F401
from zoo.engine.losses.rtdetr import HungarianMatcher, RTDETRLoss, linear_assignment, rtdetr_targets
from zoo.engine.tasks.heads import HEADS
from zoo.engine.tasks.rtdetr import rtdetr_train_inputs
from zoo.model import Model
from zoo.nn.heads import best_detections

TINY_CFG = {
    "nc": 3,
    "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]],
                 [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]]],
    "head": [[[2, 3, 4], 1, "RTDETRDecoder", ["nc", 32, 20, 2, 2, 2, 64, 0.0, None, -1, 12]]],
}


def brute_force(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n <= m:
        return min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
    return brute_force(cost.T)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (2, 5), (5, 2), (4, 6), (6, 6)])
def test_linear_assignment_is_optimal(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for trial in range(20):
        cost = rng.normal(size=shape)
        if trial % 2:
            cost = np.round(cost)  # ties
        rows, cols = linear_assignment(cost)
        assert len(rows) == min(shape)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert cost[rows, cols].sum() == pytest.approx(brute_force(cost), abs=1e-9)


def test_linear_assignment_agrees_with_scipy_and_handles_inf() -> None:
    scipy_opt = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    cost = rng.random((7, 40))
    rows, cols = linear_assignment(cost)
    r2, c2 = scipy_opt.linear_sum_assignment(cost)
    assert cost[rows, cols].sum() == pytest.approx(cost[r2, c2].sum())
    cost = np.array([[np.inf, 1.0], [2.0, np.inf]])
    rows, cols = linear_assignment(cost)
    assert cols.tolist() == [1, 0]
    assert linear_assignment(np.zeros((0, 3)))[0].shape == (0,)


def test_matcher_pairs_queries_with_their_boxes() -> None:
    gt = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.6, 0.3, 0.2]])
    cls = torch.tensor([1, 0])
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.7, 0.61, 0.3, 0.2], [0.21, 0.2, 0.1, 0.1]])
    logits = torch.zeros(3, 2)
    q, g = HungarianMatcher()(boxes, logits, gt, cls)
    assert dict(zip(g.tolist(), q.tolist())) == {0: 2, 1: 1}


def _batch(img: int = 64) -> dict:
    return {"img": torch.rand(2, 3, img, img),
            "boxes": torch.tensor([[4.0, 4.0, 30.0, 24.0], [30.0, 30.0, 60.0, 62.0], [10.0, 40.0, 20.0, 50.0]]),
            "cls": torch.tensor([0, 2, 1]), "batch_idx": torch.tensor([0, 0, 1])}


def test_targets_are_normalised_cxcywh() -> None:
    cls, boxes, idx = rtdetr_targets(_batch())
    assert torch.allclose(boxes[0], torch.tensor([17.0, 14.0, 26.0, 20.0]) / 64)
    assert cls.tolist() == [0, 2, 1] and idx.tolist() == [0, 0, 1]


def test_perfect_predictions_have_lower_loss_than_random() -> None:
    """Queries that reproduce the targets (right class, exact box) score far better than noise, and
    the denoising positive slots from dn_meta are the ones scored against the targets."""
    batch = _batch()
    _, boxes, _ = rtdetr_targets(batch)
    loss_fn = RTDETRLoss(nc=3)
    q, nc = 6, 3
    good_boxes = torch.rand(2, q, 4) * 0.1 + 0.45
    good_logits = torch.full((2, q, nc), -8.0)
    for b, rows in ((0, [0, 1]), (1, [2])):
        for slot, t in enumerate(rows):
            good_boxes[b, slot] = boxes[t]
            good_logits[b, slot, int(batch["cls"][t])] = 8.0
    # two denoising groups of max_gt=2 positives + 2 negatives: positives at 0,1 and 4,5
    meta = {"dn_pos_idx": [torch.tensor([0, 1, 4, 5]), torch.tensor([0, 4])], "dn_num_group": 2,
            "dn_num_split": [8, q]}
    dn_boxes = torch.full((2, 8, 4), 0.5)
    dn_logits = torch.full((2, 8, nc), -8.0)
    for b, rows in ((0, [0, 1]), (1, [2])):
        for grp in range(2):
            for slot, t in enumerate(rows):
                dn_boxes[b, grp * 4 + slot] = boxes[t]
                dn_logits[b, grp * 4 + slot, int(batch["cls"][t])] = 8.0

    def preds(dec_b: torch.Tensor, dec_l: torch.Tensor, dn_b: torch.Tensor, dn_l: torch.Tensor) -> dict:
        return {"dec_bboxes": torch.cat([dn_b, dec_b], 1)[None].repeat(2, 1, 1, 1),
                "dec_scores": torch.cat([dn_l, dec_l], 1)[None].repeat(2, 1, 1, 1),
                "enc_bboxes": dec_b, "enc_scores": dec_l, "dn_meta": meta}

    good_loss, good = loss_fn(preds(good_boxes, good_logits, dn_boxes, dn_logits), batch)
    torch.manual_seed(0)
    bad_loss, bad = loss_fn(preds(torch.rand(2, q, 4) * 0.5 + 0.25, torch.randn(2, q, nc),
                                  dn_boxes.flip(1), dn_logits.flip(1)), batch)
    assert set(good) == set(RTDETRLoss.item_names)
    assert good["l1"] < 1e-5 and good["giou"] < 1e-4 and good["dn_l1"] < 1e-5 and good["dn_giou"] < 1e-4
    assert good["dn_cls"] < 0.05 and good["cls"] < 0.05
    assert bad["dn_l1"] > 0.5 and bad["l1"] > 0.5
    assert float(good_loss) < 0.1 * float(bad_loss)
    bad_meta = dict(meta, dn_pos_idx=[torch.tensor([0]), torch.tensor([0, 4])])
    with pytest.raises(ValueError, match="positive slots"):
        loss_fn(dict(preds(good_boxes, good_logits, dn_boxes, dn_logits), dn_meta=bad_meta), batch)


def test_training_step_on_the_decoder_reduces_the_loss() -> None:
    torch.manual_seed(0)
    model = Model(TINY_CFG).train()
    entry = HEADS.get(model.head.loss)
    loss_fn = entry.loss(model, argparse.Namespace())
    batch = _batch()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        preds = model(batch["img"], **rtdetr_train_inputs(batch))
        assert preds["dn_meta"] is not None
        loss, items = loss_fn(preds, batch)
        assert torch.isfinite(loss) and items["dn_cls"] > 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        out = model(batch["img"])
    dets = best_detections(out, 5)
    assert dets.shape == (2, 5, 6)
    _, items = loss_fn(out[1], batch)  # validation loss on the eval output, no denoising
    assert items["dn_cls"] == 0.0 and items["cls"] > 0
