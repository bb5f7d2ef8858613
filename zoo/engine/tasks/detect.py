"""Object detection: datasets with boxes, the head's loss, COCO mAP validation, box overlays.

Any head that keeps the detection contract of :mod:`zoo.nn.heads` works: its eval output gives the
detections and the raw dict a validation loss scores, and its ``loss`` attribute names its entry in
:data:`zoo.engine.tasks.heads.HEADS` (this file registers YOLOv10's, ``"yolov10"``).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from zoo.data.dataset import DetectionDataset, collate_detection
from zoo.data.spec import DataSpec
from zoo.data.transforms import AugmentConfig
from zoo.engine.losses.yolo import LossGains, YOLOv10Loss
from zoo.engine.metrics import DetectionMetrics
from zoo.engine.plotting import draw_boxes, save_grid
from zoo.engine.tasks.base import TASKS, BaseTask
from zoo.engine.tasks.heads import HEADS, DetectHead
from zoo.errors import ConfigError
from zoo.nn.heads import detect

__all__ = ["DetectTask", "box_augment"]


def box_augment(args: argparse.Namespace) -> AugmentConfig:
    """Flip / zoom / colour augmentation for box and mask datasets, from the ``zoo train`` flags."""
    return AugmentConfig(fliplr=getattr(args, "fliplr", 0.5), flipud=getattr(args, "flipud", 0.0),
                         scale=getattr(args, "scale_aug", 0.3), hsv_h=getattr(args, "hsv_h", 0.015),
                         hsv_s=getattr(args, "hsv_s", 0.7), hsv_v=getattr(args, "hsv_v", 0.4))


def _v10_loss(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    gains = LossGains(box=getattr(args, "box", 7.5), cls=getattr(args, "cls", 0.5), dfl=getattr(args, "dfl", 1.5))
    return YOLOv10Loss(model.model[-1], gains)


HEADS.register(DetectHead("yolov10", loss=_v10_loss))


@TASKS.register
class DetectTask(BaseTask):
    name = "detect"
    fitness_key = "mAP50-95"
    default_imgsz = 320

    def __init__(self, args: argparse.Namespace, model: nn.Module, data: DataSpec | None = None) -> None:
        super().__init__(args, model, data)
        head = model.model[-1]
        loss = getattr(head, "loss", None)
        if not isinstance(loss, str) or loss not in HEADS:
            raise ConfigError(f"no detection loss for head {type(head).__name__} (its 'loss' attribute is "
                              f"{loss!r}; known: {', '.join(HEADS.names())})", file=getattr(model, "source", None))
        self.head = HEADS.get(loss)
        self.loss_names = ("box", "cls", "dfl")

    def build_dataset(self, split: str, imgsz: int, augment: bool) -> Dataset:
        assert self.spec is not None, "call setup_data first"
        return DetectionDataset(self.spec.detection_source(split), imgsz, box_augment(self.args) if augment else None)

    def collate(self, batch: list[dict]) -> dict:
        return collate_detection(batch)

    def build_loss(self, model: nn.Module) -> nn.Module:
        loss = self.head.loss(model, self.args)
        self.loss_names = tuple(getattr(loss, "item_names", self.loss_names))
        return loss

    def train_inputs(self, batch: dict) -> dict[str, Any]:
        return self.head.train_inputs(batch) if self.head.train_inputs else {}

    def detections(self, model: nn.Module, img: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """``(detections (B, <=max_det, 6), raw)`` of the eval forward (the head contract)."""
        return detect(model, img, int(getattr(self.args, "max_det", 300)))

    @torch.no_grad()
    def validate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 loss_fn: nn.Module | None = None, progress: bool = False) -> dict[str, float]:
        was_training = model.training
        model.eval()
        metrics = DetectionMetrics(len(self.names))
        conf = float(getattr(self.args, "conf", 0.001))
        loss_sums: dict[str, float] = {}
        batches = 0
        for batch in tqdm(loader, desc="  val", leave=False, disable=not progress, dynamic_ncols=True):
            batch = self.preprocess(batch, device)
            dets, raw = self.detections(model, batch["img"])
            if loss_fn is not None:
                _, items = loss_fn(raw, batch)
                for k, v in items.items():
                    loss_sums[k] = loss_sums.get(k, 0.0) + v
                batches += 1
            dets = dets.float().cpu()
            boxes, cls, idx = batch["boxes"].cpu(), batch["cls"].cpu(), batch["batch_idx"].cpu()
            for i in range(dets.shape[0]):
                d = dets[i][dets[i, :, 4] > conf]
                metrics.update(d[:, :4], d[:, 4], d[:, 5], boxes[idx == i], cls[idx == i])
        model.train(was_training)
        self.per_class = dict(zip(self.names, metrics.per_class_ap50().tolist()))
        results = metrics.compute()
        results.update({f"val/{k}": v / max(batches, 1) for k, v in loss_sums.items()})
        return results

    @torch.no_grad()
    def plot_predictions(self, model: nn.Module, batch: dict, path: Path, conf: float = 0.25) -> Path:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        dets, _ = self.detections(model, self.normalise(batch["img"].to(device)))
        model.train(was_training)
        images = []
        for i in range(min(len(dets), 8)):
            d = dets[i][dets[i, :, 4] > conf].float().cpu().numpy()
            images.append(draw_boxes(self.image_rgb(batch, i), d[:, :4], d[:, 5].astype(np.int64), self.names, d[:, 4]))
        return save_grid(images, path)
