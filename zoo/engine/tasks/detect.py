"""Object detection: datasets with boxes, the head's loss, COCO mAP validation, box overlays.

Heads plug in through :data:`DETECT_HEADS` (keyed by the head's class name): how to build the loss,
how to turn the eval-mode output into ``(B, K, 6)`` detections (x1, y1, x2, y2, score, class in
input pixels), and which part of the eval output the loss can score for a validation loss.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from zoo.data.dataset import DetectionDataset, collate_detection
from zoo.data.transforms import AugmentConfig
from zoo.engine.losses.yolo import LossGains, YOLOv10Loss
from zoo.engine.metrics import DetectionMetrics
from zoo.engine.plotting import draw_boxes, save_grid
from zoo.engine.tasks.base import BaseTask, register_task
from zoo.errors import ConfigError

__all__ = ["DetectHead", "DETECT_HEADS", "register_detect_head", "DetectTask"]


def box_augment(args: argparse.Namespace) -> AugmentConfig:
    """Flip / zoom / colour augmentation for box and mask datasets, from the ``zoo train`` flags."""
    return AugmentConfig(fliplr=getattr(args, "fliplr", 0.5), flipud=getattr(args, "flipud", 0.0),
                         scale=getattr(args, "scale_aug", 0.3), hsv_h=getattr(args, "hsv_h", 0.015),
                         hsv_s=getattr(args, "hsv_s", 0.7), hsv_v=getattr(args, "hsv_v", 0.4))


@dataclass(frozen=True)
class DetectHead:
    """How the detection task drives one kind of head.

    ``loss(model, args)`` builds the training loss; ``postprocess(eval_output, max_det)`` gives
    ``(B, K, 6)`` detections; ``raw(eval_output)`` picks what the loss scores in validation (or
    ``None`` for no validation loss); ``train_inputs(batch)`` gives extra forward kwargs in training.
    """

    loss: Callable[[nn.Module, argparse.Namespace], nn.Module]
    postprocess: Callable[[Any, int], torch.Tensor]
    raw: Callable[[Any], Any] | None = None
    train_inputs: Callable[[dict], dict] | None = None


DETECT_HEADS: dict[str, DetectHead] = {}


def register_detect_head(head_class_name: str, entry: DetectHead) -> DetectHead:
    if head_class_name in DETECT_HEADS:
        raise KeyError(f"detection head '{head_class_name}' is already registered")
    DETECT_HEADS[head_class_name] = entry
    return entry


def _v10_loss(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    gains = LossGains(box=getattr(args, "box", 7.5), cls=getattr(args, "cls", 0.5), dfl=getattr(args, "dfl", 1.5))
    return YOLOv10Loss(model.model[-1], gains)


def _v10_postprocess(output: Any, max_det: int) -> torch.Tensor:
    from zoo.nn.yolov10 import v10_postprocess

    decoded = output[0] if isinstance(output, (tuple, list)) else output
    return v10_postprocess(decoded.transpose(1, 2), max_det)


register_detect_head("v10Detect", DetectHead(loss=_v10_loss, postprocess=_v10_postprocess,
                                             raw=lambda out: out[1] if isinstance(out, (tuple, list)) else None))


@register_task("detect")
class DetectTask(BaseTask):
    fitness_key = "mAP50-95"
    default_imgsz = 320

    def __init__(self, args: argparse.Namespace, model: nn.Module) -> None:
        super().__init__(args, model)
        head_name = type(model.model[-1]).__name__
        if head_name not in DETECT_HEADS:
            raise ConfigError(f"no detection loss for head {head_name}; known: {', '.join(sorted(DETECT_HEADS))}",
                              file=getattr(model, "source", None))
        self.head = DETECT_HEADS[head_name]
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

    def detections(self, model: nn.Module, img: torch.Tensor) -> tuple[torch.Tensor, Any]:
        out = model(img)
        return self.head.postprocess(out, int(getattr(self.args, "max_det", 300))), out

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
            dets, out = self.detections(model, batch["img"])
            if loss_fn is not None and self.head.raw is not None and (raw := self.head.raw(out)) is not None:
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
