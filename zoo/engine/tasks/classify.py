"""Image classification: ImageFolder / shapes-crop datasets, label-smoothed CE, top-1 / top-5."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from zoo.data.class_folders import ClassificationDataset, ClassifyAugment, collate_classification
from zoo.engine.losses.cross_entropy import ClassificationLoss
from zoo.engine.metrics import TopKAccuracy
from zoo.engine.plotting import draw_label, save_grid
from zoo.engine.tasks.base import TASKS, BaseTask

__all__ = ["ClassifyTask"]


@TASKS.register
class ClassifyTask(BaseTask):
    name = "classify"
    loss_names = ("cls",)
    fitness_key = "top1"
    default_imgsz = 224

    def build_dataset(self, split: str, imgsz: int, augment: bool) -> Dataset:
        assert self.spec is not None, "call setup_data first"
        a = self.args
        # Shape classes are defined by geometry (a stretched circle is an ellipse), so on shapes the
        # random crop keeps the aspect ratio and most of the object.
        geometric = self.spec.kind == "shapes"
        aug = ClassifyAugment(min_area=0.85 if geometric else 0.6, aspect=1.0 if geometric else 4 / 3,
                              fliplr=getattr(a, "fliplr", 0.5), hsv_h=getattr(a, "hsv_h", 0.015),
                              hsv_s=getattr(a, "hsv_s", 0.5), hsv_v=getattr(a, "hsv_v", 0.3)) if augment else None
        return ClassificationDataset(self.spec.classification_source(split), imgsz, aug)

    def collate(self, batch: list[dict]) -> dict:
        return collate_classification(batch)

    def build_loss(self, model: nn.Module) -> nn.Module:
        return ClassificationLoss(float(getattr(self.args, "label_smoothing", 0.1)))

    @torch.no_grad()
    def validate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 loss_fn: nn.Module | None = None, progress: bool = False) -> dict[str, float]:
        was_training = model.training
        model.eval()
        acc = TopKAccuracy((1, min(5, len(self.names))))
        loss_sum, batches = 0.0, 0
        for batch in tqdm(loader, desc="  val", leave=False, disable=not progress, dynamic_ncols=True):
            batch = self.preprocess(batch, device)
            logits = model(batch["img"])
            acc.update(logits.float(), batch["cls"])
            if loss_fn is not None:
                loss_sum += loss_fn(logits, batch)[1]["cls"]
                batches += 1
        model.train(was_training)
        out = acc.compute()
        if "top5" not in out:  # fewer than five classes: top-5 is trivially 1
            out["top5"] = 1.0
        if batches:
            out["val/cls"] = loss_sum / batches
        return out

    @torch.no_grad()
    def plot_predictions(self, model: nn.Module, batch: dict, path: Path) -> Path:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        probs = model(self.normalise(batch["img"].to(device))).float().softmax(-1).cpu()
        model.train(was_training)
        images = []
        for i in range(min(len(probs), 16)):
            p, c = probs[i].max(0)
            truth = int(batch["cls"][i])
            text = f"{self.names[int(c)]} {float(p):.2f} (true {self.names[truth]})"
            images.append(draw_label(self.image_rgb(batch, i), text, ok=int(c) == truth))
        return save_grid(images, path)
