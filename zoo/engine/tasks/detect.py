"""Object detection: datasets with boxes, the head's loss, COCO mAP validation, box overlays.

Any head that keeps the detection contract of :mod:`zoo.nn.heads` works: its eval output gives the
detections and the raw dict a validation loss scores, and its ``loss`` attribute names its entry in
:data:`zoo.engine.tasks.heads.HEADS` (this file registers ``"yolov10"``, both branches of an end-to-end head, and ``"yolov8"``, the
one-to-many branch of a ``Detect`` head whose detections go through NMS).
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
from zoo.engine.losses.yolo import LossGains, YOLOv8Loss, YOLOv10Loss
from zoo.engine.metrics import ConfusionMatrix, DetectionMetrics
from zoo.engine.plotting import (draw_boxes, draw_legend, grid_width, plot_confusion_matrix, plot_pr_curve, save_grid,
                                 side_by_side)
from zoo.engine.tasks.base import TASKS, BaseTask
from zoo.engine.tasks.heads import HEADS, DetectHead
from zoo.errors import ConfigError
from zoo.nn.heads import detect

__all__ = ["DetectTask", "box_augment", "PLOT_CONF", "PLOT_MAX_DET"]

PLOT_CONF = 0.25  # detections drawn in val_predictions.jpg and counted in the confusion matrix score at least this
PLOT_MAX_DET = 20  # at most this many drawn per image (best first)
LABEL_MIN_SIZE = 24  # boxes with a shorter side under this many pixels get no text (the legend names the colour)


def box_augment(args: argparse.Namespace) -> AugmentConfig:
    """Flip / zoom / colour augmentation for box and mask datasets, from the ``zoo train`` flags."""
    return AugmentConfig(fliplr=getattr(args, "fliplr", 0.5), flipud=getattr(args, "flipud", 0.0),
                         scale=getattr(args, "scale_aug", 0.3), hsv_h=getattr(args, "hsv_h", 0.015),
                         hsv_s=getattr(args, "hsv_s", 0.7), hsv_v=getattr(args, "hsv_v", 0.4))


def _gains(args: argparse.Namespace) -> LossGains:
    return LossGains(box=getattr(args, "box", 7.5), cls=getattr(args, "cls", 0.5), dfl=getattr(args, "dfl", 1.5))


HEADS.register(DetectHead("yolov10", loss=lambda model, args: YOLOv10Loss(model.model[-1], _gains(args))))
HEADS.register(DetectHead("yolov8", loss=lambda model, args: YOLOv8Loss(model.model[-1], _gains(args))))


@TASKS.register
class DetectTask(BaseTask):
    name = "detect"
    fitness_key = "mAP50-95"
    default_imgsz = 320

    def __init__(self, args: argparse.Namespace, model: nn.Module, data: DataSpec | None = None) -> None:
        super().__init__(args, model, data)
        self.loss_names = ("box", "cls", "dfl")
        self.head: DetectHead | None = None
        if getattr(model, "inference_only", False):
            return  # an exported graph (zoo.export.ExportedModule): validated, never trained, no loss
        head = model.model[-1]
        loss = getattr(head, "loss", None)
        if not isinstance(loss, str) or loss not in HEADS:
            raise ConfigError(f"no detection loss for head {type(head).__name__} (its 'loss' attribute is "
                              f"{loss!r}; known: {', '.join(HEADS.names())})", file=getattr(model, "source", None))
        self.head = HEADS.get(loss)

    def build_dataset(self, split: str, imgsz: int, augment: bool) -> Dataset:
        assert self.spec is not None, "call setup_data first"
        return DetectionDataset(self.spec.detection_source(split), imgsz, box_augment(self.args) if augment else None)

    def collate(self, batch: list[dict]) -> dict:
        return collate_detection(batch)

    def build_loss(self, model: nn.Module) -> nn.Module:
        if self.head is None:
            raise ConfigError(f"{getattr(model, 'source', 'this model')} is an exported graph: it validates and "
                              "predicts, but training needs the checkpoint or cfg it came from")
        loss = self.head.loss(model, self.args)
        self.loss_names = tuple(getattr(loss, "item_names", self.loss_names))
        return loss

    def train_inputs(self, batch: dict) -> dict[str, Any]:
        return self.head.train_inputs(batch) if self.head is not None and self.head.train_inputs else {}

    def detections(self, model: nn.Module, img: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """``(detections (B, <=max_det, 6), raw)`` of the eval forward (the head contract)."""
        return detect(model, img, int(getattr(self.args, "max_det", 300)), float(getattr(self.args, "conf", 0.001)))

    @torch.no_grad()
    def validate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 loss_fn: nn.Module | None = None, progress: bool = False) -> dict[str, float]:
        was_training = model.training
        model.eval()
        metrics = DetectionMetrics(len(self.names))
        confusion = ConfusionMatrix(len(self.names), conf=PLOT_CONF, iou=0.5)
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
                confusion.update(d[:, :4], d[:, 4], d[:, 5], boxes[idx == i], cls[idx == i])
        model.train(was_training)
        self.per_class = dict(zip(self.names, metrics.per_class_ap50().tolist()))
        self.confusion = confusion
        self.pr = metrics.pr_curve(0.5)
        results = metrics.compute()
        results.update({f"val/{k}": v / max(batches, 1) for k, v in loss_sums.items()})
        return results

    def save_plots(self, folder: Path) -> list[Path]:
        """confusion_matrix.png and PR_curve.png of the last :meth:`validate` (none before one ran)."""
        out = []
        if getattr(self, "confusion", None) is not None:
            c = self.confusion
            out.append(plot_confusion_matrix(c.matrix, self.names, Path(folder) / "confusion_matrix.png", c.conf, c.iou))
        if getattr(self, "pr", None) is not None:
            out.append(plot_pr_curve(*self.pr, self.names, Path(folder) / "PR_curve.png", 0.5))
        return out

    @torch.no_grad()
    def plot_predictions(self, model: nn.Module, batch: dict, path: Path, conf: float = PLOT_CONF) -> Path:
        """Per image, ground truth beside the predictions scoring at least ``conf`` (best ``PLOT_MAX_DET``),
        with a legend of the class colours; text only on boxes big enough to hold it without overlap.
        Also writes the confusion matrix and PR curve of the last validation beside ``path``."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        dets, _ = self.detections(model, self.normalise(batch["img"].to(device)))
        model.train(was_training)
        images, shown = [], []
        idx = batch["batch_idx"].cpu()
        for i in range(min(len(dets), 8)):
            d = dets[i][dets[i, :, 4] >= conf].float().cpu()
            d = d[d[:, 4].argsort(descending=True)][:PLOT_MAX_DET].numpy()
            gt_boxes, gt_cls = batch["boxes"][idx == i].cpu().numpy(), batch["cls"][idx == i].cpu().numpy()
            rgb = self.image_rgb(batch, i)
            pred_cls = d[:, 5].astype(np.int64)
            gt = draw_boxes(rgb, gt_boxes, gt_cls.astype(np.int64), self.names, min_label_size=LABEL_MIN_SIZE)
            pred = draw_boxes(rgb, d[:, :4], pred_cls, self.names, d[:, 4], min_label_size=LABEL_MIN_SIZE)
            images.append(side_by_side([gt, pred], ["ground truth", f"predictions (conf >= {conf:g})"]))
            shown.extend([*gt_cls.astype(np.int64).tolist(), *pred_cls.tolist()])
        cols = 2 if len(images) > 1 else 1
        legend = draw_legend(grid_width(images, cols), sorted(set(shown)), self.names) if shown else None
        grid_path = save_grid(images, path, columns=cols, footer=legend)
        try:
            self.save_plots(Path(path).parent)
        except Exception as exc:  # a plot must never stop a run
            print(f"warning: confusion matrix / PR curve not written ({type(exc).__name__}: {exc})")
        return grid_path
