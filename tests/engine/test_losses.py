"""YOLOv10 loss (assigner, CIoU, DFL, both branches) and the classification loss, on random tensors."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from zoo.engine.losses import ClassificationLoss, TaskAlignedAssigner, YOLOv10Loss
from zoo.ops.boxes import ciou, giou, pairwise_iou
from zoo.engine.losses.yolo import DetectionBranchLoss, grid_anchors, pad_targets

NC, REG = 3, 16
STRIDES = [8.0, 16.0, 32.0]
IMG = 64


def _head() -> SimpleNamespace:
    return SimpleNamespace(nc=NC, reg_max=REG, stride=torch.tensor(STRIDES))


def _preds(b: int = 2, requires_grad: bool = True) -> dict[str, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for branch in ("one2many", "one2one"):
        out[branch] = [torch.randn(b, 4 * REG + NC, IMG // int(s), IMG // int(s), generator=g)
                       .requires_grad_(requires_grad) for s in STRIDES]
    return out


def _batch() -> dict:
    return {"cls": torch.tensor([0, 2, 1]), "batch_idx": torch.tensor([0, 0, 1]),
            "boxes": torch.tensor([[4.0, 4.0, 30.0, 28.0], [30.0, 20.0, 60.0, 60.0], [10.0, 30.0, 20.0, 40.0]])}


def test_box_measures() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert ciou(a, a).item() == pytest.approx(1.0, abs=1e-5)
    far = torch.tensor([[20.0, 20.0, 30.0, 30.0]])
    assert giou(a, far).item() < 0 and ciou(a, far).item() < 0
    assert pairwise_iou(a, torch.tensor([[5.0, 0.0, 15.0, 10.0]])).item() == pytest.approx(1 / 3, abs=1e-5)


def test_pad_targets() -> None:
    labels, boxes, valid = pad_targets(torch.tensor([1, 0, 1]), torch.tensor([5, 6, 7]),
                                       torch.arange(12.0).view(3, 4), 3)
    assert labels.tolist() == [[6, 0], [5, 7], [0, 0]]
    assert valid.tolist() == [[True, False], [True, True], [False, False]]
    assert boxes[1, 1].tolist() == [8.0, 9.0, 10.0, 11.0]


def test_assigner_picks_topk_anchors_inside_each_box() -> None:
    anchors, strides = grid_anchors([(8, 8)], [8.0], torch.device("cpu"), torch.float32)
    anchors = anchors * strides
    gt = torch.tensor([[[4.0, 4.0, 36.0, 36.0], [40.0, 40.0, 60.0, 60.0]]])
    pred = gt[0, :1].expand(1, 64, 4).clone()  # every prediction equals the first box
    scores = torch.full((1, 64, 2), 0.5)
    for topk in (1, 4):
        boxes, tscores, fg, gt_idx = TaskAlignedAssigner(topk=topk)(
            scores, pred, anchors, torch.tensor([[0, 1]]), gt, torch.tensor([[True, True]]))
        assert int(fg.sum()) <= 2 * topk and int(fg[0].sum()) >= 1
        pos = fg[0]
        cx, cy = anchors[pos, 0], anchors[pos, 1]
        assigned = gt[0][gt_idx[0, pos]]
        assert ((cx > assigned[:, 0]) & (cx < assigned[:, 2]) & (cy > assigned[:, 1]) & (cy < assigned[:, 3])).all()
        assert torch.equal(boxes[0, pos], assigned)
        assert (tscores[0, ~pos] == 0).all() and (tscores[0, pos].sum(-1) > 0).all()
    # The first box, matched perfectly, gets the top soft score (its IoU, 1).
    assert tscores.max().item() == pytest.approx(1.0, abs=1e-4)


def test_loss_is_finite_and_reaches_both_branches() -> None:
    loss_fn = YOLOv10Loss(_head())
    preds = _preds()
    loss, items = loss_fn(preds, _batch())
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    assert set(items) == {"box", "cls", "dfl"} and all(v > 0 for v in items.values())
    assert math.isclose(sum(items.values()), loss.item(), rel_tol=1e-5)
    loss.backward()
    for branch in ("one2many", "one2one"):
        assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in preds[branch])


def test_empty_targets_give_only_classification_loss() -> None:
    empty = {"cls": torch.zeros(0, dtype=torch.long), "batch_idx": torch.zeros(0, dtype=torch.long),
             "boxes": torch.zeros(0, 4)}
    loss, items = YOLOv10Loss(_head())(_preds(), empty)
    assert items["box"] == 0 and items["dfl"] == 0 and items["cls"] > 0
    loss.backward()


def test_one_to_one_assigns_fewer_positives() -> None:
    preds = _preds(requires_grad=False)
    targets = pad_targets(_batch()["batch_idx"], _batch()["cls"], _batch()["boxes"], 2)
    counts = {}
    for topk in (1, 10):
        branch = DetectionBranchLoss(NC, REG, STRIDES, topk)
        b = 2
        flat = torch.cat([lvl.reshape(b, NC + 4 * REG, -1) for lvl in preds["one2one"]], 2).transpose(1, 2)
        dist, logits = flat.split((4 * REG, NC), -1)
        anchors, strides = grid_anchors([tuple(x.shape[-2:]) for x in preds["one2one"]], STRIDES,
                                        flat.device, flat.dtype)
        _, _, fg, _ = branch.assigner(logits.sigmoid(), branch.decode(dist, anchors) * strides, anchors * strides,
                                      *targets)
        counts[topk] = int(fg.sum())
    assert counts[1] == 3 and counts[10] > counts[1]


def test_optimising_the_raw_maps_drives_the_loss_down() -> None:
    torch.manual_seed(0)
    preds = _preds()
    params = preds["one2many"] + preds["one2one"]
    opt = torch.optim.Adam(params, lr=0.05)
    loss_fn = YOLOv10Loss(_head())
    first = None
    for _ in range(60):
        loss, _ = loss_fn(preds, _batch())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_dfl_is_minimal_at_the_target() -> None:
    branch = DetectionBranchLoss(NC, REG, STRIDES, 10)
    target = torch.tensor([[3.25, 0.0, 7.5, 14.99]])
    logits = torch.full((1, 4, REG), -20.0)
    for side, t in enumerate(target[0].tolist()):
        lo = int(t)
        hi = min(lo + 1, REG - 1)
        w = t - lo
        logits[0, side, lo] = math.log(max(1 - w, 1e-6))
        logits[0, side, hi] = math.log(max(w, 1e-6)) if hi != lo else logits[0, side, lo]
    exact = branch.dfl(logits, target).item()
    shifted = branch.dfl(logits, target + 1.0).item()
    assert exact < shifted


def test_loss_rejects_a_head_without_strides() -> None:
    head = _head()
    head.stride = torch.zeros(3)
    with pytest.raises(ValueError, match="strides"):
        YOLOv10Loss(head)


def test_classification_loss_label_smoothing() -> None:
    logits = torch.tensor([[10.0, 0.0, 0.0]], requires_grad=True)
    batch = {"cls": torch.tensor([0])}
    plain, _ = ClassificationLoss(0.0)(logits, batch)
    smooth, items = ClassificationLoss(0.1)(logits, batch)
    assert plain.item() < 1e-3 and smooth.item() > plain.item() and items["cls"] == pytest.approx(smooth.item())
    smooth.backward()
    assert logits.grad is not None
    with pytest.raises(ValueError):
        ClassificationLoss(1.0)


def test_loss_on_a_real_v10detect_head_reaches_both_branches_and_the_backbone() -> None:
    from tiny_cfgs import TINY_DETECT
    import yaml

    from zoo import Model

    torch.manual_seed(0)
    model = Model(yaml.safe_load(TINY_DETECT), nc=NC)
    model.train()
    preds = model(torch.rand(2, 3, IMG, IMG))
    assert set(preds) == {"one2many", "one2one"}
    loss, _ = YOLOv10Loss(model.model[-1])(preds, _batch())
    loss.backward()
    head = model.model[-1]
    for branch in (head.cv2, head.cv3, head.one2one_cv2, head.one2one_cv3):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.parameters())
    assert model.model[0].conv.weight.grad.abs().sum() > 0
