"""RT-DETR overfit check: a tiny detector must memorise four shapes images (arXiv:2304.08069).

The whole training path is exercised: targets from a real collated batch, denoising queries,
Hungarian matching, varifocal + L1 + GIoU on every decoder layer and the encoder proposals, then the
NMS-free eval output scored with the COCO-style mAP. If the loss, the matching, the box formats or
the post-processing disagree anywhere, the detections cannot land on the training boxes.

BatchNorm note: with Ultralytics' momentum (0.03) the running statistics still carry ~1% of their
initial values after 150 steps while the weights move fast, so before evaluating the test re-estimates
them on the training batch (cumulative average, one pass) - as a long run would have by itself.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn

import zoo.nn  # noqa: F401
from zoo.data.dataset import DetectionDataset, collate_detection
from zoo.data.spec import resolve_data
from zoo.ops.boxes import pairwise_iou
from zoo.engine.metrics import DetectionMetrics
from zoo.engine.tasks.heads import HEADS
from zoo.engine.tasks.rtdetr import rtdetr_train_inputs
from zoo.model import Model
from zoo.nn.heads import best_detections

IMGSZ = 96
N_IMAGES = 4
STEPS = 150

TINY_RTDETR = {
    "nc": 5,
    "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [48, 3, 2]],
                 [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [64, 3, 2]]],
    # [nc, hidden, queries, points, heads, decoder layers, ffn, dropout, act, eval_idx, denoising]
    "head": [[[2, 3, 4], 1, "RTDETRDecoder", ["nc", 64, 30, 2, 4, 2, 128, 0.0, None, -1, 20]]],
}


def _training_batch() -> dict:
    spec = resolve_data(f"shapes:n_train={N_IMAGES},n_val=1,max_objects=3", "detect", IMGSZ)
    dataset = DetectionDataset(spec.detection_source("train"), IMGSZ, augment=None)
    batch = collate_detection([dataset[i] for i in range(N_IMAGES)])
    batch["img"] = batch["img"].float() / 255.0
    return batch


def _recalibrate_batchnorm(model: nn.Module, batch: dict) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass gives the batch statistics
    model.train()
    with torch.no_grad():
        model(batch["img"])


def test_rtdetr_overfits_four_images() -> None:
    torch.manual_seed(0)
    batch = _training_batch()
    model = Model(TINY_RTDETR).train()
    entry = HEADS.get(model.head.loss)
    loss_fn = entry.loss(model, argparse.Namespace())
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    losses: list[float] = []
    for _ in range(STEPS):
        preds = model(batch["img"], **rtdetr_train_inputs(batch))
        loss, items = loss_fn(preds, batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first / 8, f"loss fell only from {first:.2f} to {last:.2f}"
    assert items["l1"] < 0.5 and items["giou"] < 1.0, items  # the matched queries sit on their boxes

    _recalibrate_batchnorm(model, batch)
    model.eval()
    with torch.no_grad():
        dets = best_detections(model(batch["img"]), 100)
    metrics = DetectionMetrics(5)
    for i in range(N_IMAGES):
        sel = batch["batch_idx"] == i
        gt_boxes, gt_cls = batch["boxes"][sel], batch["cls"][sel]
        d = dets[i]
        metrics.update(d[:, :4], d[:, 4], d[:, 5], gt_boxes, gt_cls)
        # every object is found, with its class, by one of the image's top-scoring detections
        top = d[: 2 * len(gt_cls)]
        iou = pairwise_iou(gt_boxes, top[:, :4])
        same_class = gt_cls[:, None] == top[None, :, 5].long()
        assert ((iou > 0.5) & same_class).any(1).all(), f"image {i}: gt {gt_boxes.tolist()} top {top.tolist()}"
    assert metrics.compute()["mAP50"] > 0.9
