"""SAM overfit check: MobileSAM's smallest layout must memorise box-prompted masks of a few images.

Segment Anything: arXiv:2304.02643; MobileSAM (TinyViT encoder): arXiv:2306.14289. The whole
promptable-segmentation path is exercised: instance selection in ``SamTask.preprocess``, jittered
box prompts in input pixels, focal x20 + dice + IoU-MSE, then the task's own validation (eval mode,
deterministic tight-box prompts) on the same images. A prompt-coordinate, mask-size or loss bug keeps
the box mIoU near zero.
"""
from __future__ import annotations

import argparse

import torch

import zoo.nn  # noqa: F401
from zoo.data.dataset import collate_detection
from zoo.engine.tasks.sam import SamTask
from zoo.model import Model

IMGSZ = 96
N_IMAGES = 3
STEPS = 45


def test_sam_overfits_box_prompts() -> None:
    torch.manual_seed(0)
    args = argparse.Namespace(data=f"shapes:n_train={N_IMAGES},n_val=1,max_objects=3", sam_sets=3)
    model = Model("cfg/sam-tinyvit.yaml", scale="n").train()
    task = SamTask(args, model)
    task.setup_data(IMGSZ)
    dataset = task.build_dataset("train", IMGSZ, augment=False)
    raw = collate_detection([dataset[i] for i in range(N_IMAGES)])
    loss_fn = task.build_loss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    device = torch.device("cpu")
    losses: list[float] = []
    for _ in range(STEPS):
        batch = task.preprocess(raw, device)
        preds = model(batch["img"], **task.sample_prompts(batch["sam_targets"], "box"))
        loss, _ = loss_fn(preds, batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first / 10, f"loss fell only from {first:.3f} to {last:.3f}"
    results = task.validate(model, [raw], device)
    assert results["mIoU/box"] > 0.85, results
