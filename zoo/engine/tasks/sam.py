"""Promptable segmentation (Segment Anything): prompts sampled from instance masks, mIoU per prompt type.

Kirillov et al., "Segment Anything", arXiv:2304.02643, App. A "Training algorithm": for each
ground-truth mask a prompt is simulated, either a box (the mask's box with noise, std 10% of the
side) or foreground points sampled from the mask; later points are placed in the error region of
the previous prediction (a false-negative pixel gives a foreground point, a false-positive one a
background point) and the previous mask logits are fed back as a mask prompt. MobileSAM
(arXiv:2306.14289) keeps the same prompt encoder / mask decoder with a TinyViT image encoder.

Each training step draws one prompt type for the whole batch (the head takes one prompt form per
call): ``box`` (single-mask output), ``point`` (one foreground point, three candidate masks, the
loss keeps the best) or ``points`` (several foreground / background points, single-mask output).
With probability ``sam_correction`` (an attribute of the run's args; 0 by default) a no-gradient pass
first predicts a mask, and one correction point from its error region plus its logits are added.

Images are normalised with SAM's pixel mean / std (the head declares them; see
:mod:`zoo.data.normalise`), as ``SamPredictor`` does, so trained weights work there unchanged.

``--freeze`` / ``--lr-scale`` understand ``image_encoder`` (every row before the head, neck
included, as in SAM), ``prompt_encoder`` and ``mask_decoder``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from zoo.data.dataset import DetectionDataset, collate_detection
from zoo.data.spec import DataSpec
from zoo.engine.losses.sam import SamLoss
from zoo.engine.metrics import MaskIoUMeter
from zoo.engine.plotting import overlay_masks, save_grid, side_by_side
from zoo.engine.tasks.base import TASKS, BaseTask
from zoo.engine.tasks.detect import box_augment
from zoo.errors import ConfigError

__all__ = ["SamTask", "image_embedding", "box_from_mask", "interior_point", "sample_points"]

PROMPT_TYPES = ("box", "point", "points")


def _prompt_mix(text: str) -> torch.Tensor:
    """``"0.5,0.25,0.25"`` -> sampling weights of box / point / points prompts."""
    try:
        weights = torch.tensor([float(v) for v in text.split(",")])
    except ValueError:
        weights = torch.tensor([])
    if weights.numel() != len(PROMPT_TYPES) or (weights < 0).any() or weights.sum() <= 0:
        raise ConfigError(f"--sam-prompt-mix takes {len(PROMPT_TYPES)} non-negative weights for box,point,points; got {text!r}")
    return weights


VAL_MAX_INSTANCES = 8  # per image, to bound validation time


def image_embedding(model: nn.Module, img: torch.Tensor) -> torch.Tensor:
    """Every row but the head: ``(B, 3, S, S)`` -> the head's input ``(B, C, S/16, S/16)``."""
    outputs: dict[int, Any] = {}
    x: Any = img
    for record, module in zip(model.records[:-1], model.model[:-1]):
        src = record.from_

        def read(s: int) -> Any:
            return x if s == -1 else outputs[s if s >= 0 else record.index + s]

        x = outputs[record.index] = module([read(s) for s in src] if isinstance(src, tuple) else read(src))
    head_src = model.records[-1].from_
    return x if head_src == -1 else outputs[head_src if head_src >= 0 else len(model.records) - 1 + head_src]


def box_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Tight ``(4,)`` x1, y1, x2, y2 box of a ``(H, W)`` bool mask (pixel edges; zeros if empty)."""
    ys = torch.nonzero(mask.any(1)).flatten()
    xs = torch.nonzero(mask.any(0)).flatten()
    if len(ys) == 0:
        return mask.new_zeros(4, dtype=torch.float32)
    return torch.stack([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1]).float()


def interior_point(mask: torch.Tensor) -> torch.Tensor:
    """A deterministic foreground point ``(2,)`` x, y: the mask pixel nearest to its centroid."""
    yx = torch.nonzero(mask).float()
    if len(yx) == 0:
        h, w = mask.shape
        return torch.tensor([w / 2, h / 2])
    centre = yx.mean(0)
    best = yx[((yx - centre) ** 2).sum(1).argmin()]
    return best.flip(0)


def sample_points(region: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` pixels ``(n, 2)`` x, y drawn uniformly (with replacement) from a ``(H, W)`` bool region;
    the image centre if the region is empty."""
    yx = torch.nonzero(region)
    if len(yx) == 0:
        h, w = region.shape
        return torch.tensor([[w / 2, h / 2]]).repeat(n, 1)
    pick = torch.randint(len(yx), (n,), generator=generator)
    return yx[pick].flip(1).float()


@TASKS.register
class SamTask(BaseTask):
    name = "segment"
    loss_names = SamLoss.item_names
    fitness_key = "mIoU/box"
    default_imgsz = 256

    def __init__(self, args: argparse.Namespace, model: nn.Module, data: DataSpec | None = None) -> None:
        super().__init__(args, model, data)
        self.sets = int(getattr(args, "sam_sets", 4))  # prompt sets (instances) per image in training
        self.box_jitter = float(getattr(args, "sam_box_jitter", 0.1))
        self.max_points = int(getattr(args, "sam_max_points", 4))
        self.correction = float(getattr(args, "sam_correction", 0.0))
        self.type_weights = _prompt_mix(str(getattr(args, "sam_prompt_mix", "0.5,0.25,0.25")))
        self._model: nn.Module | None = None

    # ------------------------------------------------------------------ data
    def build_dataset(self, split: str, imgsz: int, augment: bool) -> Dataset:
        assert self.spec is not None, "call setup_data first"
        aug = box_augment(self.args) if augment else None
        return DetectionDataset(self.spec.detection_source(split), imgsz, aug, with_masks=True)

    def collate(self, batch: list[dict]) -> dict:
        return collate_detection(batch)

    def build_loss(self, model: nn.Module) -> nn.Module:
        self._model = model  # the correction-point pass needs a prediction before the training forward
        return SamLoss()

    def parameter_prefixes(self, model: nn.Module, key: str) -> list[str]:
        last = len(model.model) - 1
        named = {"image_encoder": [f"model.{i}." for i in range(last)],
                 "prompt_encoder": [f"model.{last}.prompt_encoder."],
                 "mask_decoder": [f"model.{last}.mask_decoder."]}
        return named.get(key.strip(), None) or super().parameter_prefixes(model, key)

    def preprocess(self, batch: dict, device: torch.device) -> dict:
        """Normalise images and pick ``sets`` instances per image at random: ``sam_targets (B, N, S, S)``
        bool and ``sam_valid (B, N)`` (images with fewer instances repeat one, marked invalid)."""
        out = super().preprocess(batch, device)
        masks = batch.get("masks")
        if masks is None:
            raise ValueError("SAM training needs instance masks; use shapes or a COCO dataset with segmentations")
        b, _, s_h, s_w = out["img"].shape
        targets = torch.zeros(b, self.sets, s_h, s_w, dtype=torch.bool)
        valid = torch.zeros(b, self.sets, dtype=torch.bool)
        for i, m in enumerate(masks):
            keep = torch.nonzero(m.flatten(1).sum(1) >= 4).flatten()  # drop fully occluded instances
            if len(keep) == 0:
                continue
            order = keep[torch.randperm(len(keep))]
            chosen = order[torch.arange(self.sets) % len(order)]
            targets[i] = m[chosen]
            valid[i, : min(len(order), self.sets)] = True
        out["sam_targets"] = targets.to(device)
        out["sam_valid"] = valid.to(device)
        return out

    # ------------------------------------------------------------------ prompts
    def _jittered_box(self, mask: torch.Tensor) -> torch.Tensor:
        box = box_from_mask(mask)
        side = (box[2:] - box[:2]).repeat(2)
        noise = (torch.randn(4) * self.box_jitter * side).clamp(-2 * self.box_jitter * side, 2 * self.box_jitter * side)
        h, w = mask.shape
        box = (box + noise).clamp(min=0)
        box[0::2] = box[0::2].clamp(max=w)
        box[1::2] = box[1::2].clamp(max=h)
        return box

    def _points_prompt(self, mask: torch.Tensor, n_pos: int, n_neg: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(max_points, 2)`` coordinates and labels: foreground from the mask, background from its
        box outside the mask (else anywhere outside it); padding has label -1."""
        coords = torch.zeros(self.max_points, 2)
        labels = torch.full((self.max_points,), -1, dtype=torch.long)
        coords[:n_pos] = sample_points(mask, n_pos)
        labels[:n_pos] = 1
        if n_neg:
            x1, y1, x2, y2 = box_from_mask(mask).long().tolist()
            region = torch.zeros_like(mask)
            region[y1:y2, x1:x2] = True
            region &= ~mask
            if not region.any():
                region = ~mask
            coords[n_pos:n_pos + n_neg] = sample_points(region, n_neg)
            labels[n_pos:n_pos + n_neg] = 0
        return coords, labels

    def sample_prompts(self, targets: torch.Tensor, kind: str) -> dict[str, Any]:
        """Prompts for ``targets (B, N, S, S)`` bool of one ``kind`` -> the head's keyword inputs."""
        b, n = targets.shape[:2]
        flat = targets.flatten(0, 1).cpu()
        if kind == "box":
            boxes = torch.stack([self._jittered_box(m) for m in flat]).view(b, n, 4)
            return {"boxes": boxes.to(targets.device), "multimask_output": False}
        coords, labels = [], []
        for m in flat:
            if kind == "point":
                c, l = self._points_prompt(m, 1, 0)
            else:
                n_pos = int(torch.randint(1, self.max_points, ()).item())
                n_neg = int(torch.randint(0, self.max_points - n_pos + 1, ()).item())
                c, l = self._points_prompt(m, n_pos, n_neg)
            coords.append(c)
            labels.append(l)
        return {"points": torch.stack(coords).view(b, n, -1, 2).to(targets.device),
                "labels": torch.stack(labels).view(b, n, -1).to(targets.device),
                "multimask_output": kind == "point"}

    @torch.no_grad()
    def add_correction(self, model: nn.Module, img: torch.Tensor, targets: torch.Tensor,
                       prompts: dict[str, Any]) -> dict[str, Any]:
        """One round of SAM's iterative training: predict with ``prompts``, then add a point from the
        error region (foreground where the mask was missed, background where it spilled over) and
        the predicted logits as ``mask_inputs``. The result uses the single-mask output."""
        masks, iou = model(img, **prompts)  # (B, N, K, h, w)
        best = iou.argmax(-1)
        logits = masks.gather(2, best[..., None, None, None].expand(-1, -1, 1, *masks.shape[-2:]))
        full = F.interpolate(logits.flatten(0, 1).float(), size=targets.shape[-2:], mode="bilinear",
                             align_corners=False).squeeze(1) > 0
        truth = targets.flatten(0, 1)
        b, n = targets.shape[:2]
        new_coords, new_labels = [], []
        for pred, gt in zip(full.cpu(), truth.cpu()):
            missed, spilled = gt & ~pred, pred & ~gt
            positive = int(missed.sum()) >= int(spilled.sum())
            region = missed if positive else spilled
            if not region.any():
                region, positive = gt, True
            new_coords.append(sample_points(region, 1)[0])
            new_labels.append(1 if positive else 0)
        extra_c = torch.stack(new_coords).view(b, n, 1, 2).to(img.device)
        extra_l = torch.tensor(new_labels, device=img.device).view(b, n, 1)
        out = {k: v for k, v in prompts.items() if k in ("boxes",)}
        if "points" in prompts:
            out["points"] = torch.cat([prompts["points"], extra_c], 2)
            out["labels"] = torch.cat([prompts["labels"], extra_l], 2)
        else:
            out["points"], out["labels"] = extra_c, extra_l
        out["mask_inputs"] = logits.detach()
        out["multimask_output"] = False
        return out

    def train_inputs(self, batch: dict) -> dict[str, Any]:
        kind = PROMPT_TYPES[int(torch.multinomial(self.type_weights, 1).item())]
        prompts = self.sample_prompts(batch["sam_targets"], kind)
        if self.correction > 0 and self._model is not None and float(torch.rand(())) < self.correction:
            prompts = self.add_correction(self._model, batch["img"], batch["sam_targets"], prompts)
        return prompts

    # ------------------------------------------------------------------ validation
    def eval_prompts(self, masks: torch.Tensor) -> dict[str, dict[str, Any]]:
        """Deterministic prompts for ``(M, S, S)`` masks of one image, per prompt type, as ``N = M`` sets."""
        g = torch.Generator().manual_seed(0)
        boxes = torch.stack([box_from_mask(m) for m in masks])
        centre = torch.stack([interior_point(m) for m in masks])
        coords = torch.zeros(len(masks), 3, 2)
        labels = torch.tensor([1, 1, 0]).repeat(len(masks), 1)
        for j, m in enumerate(masks):
            coords[j, 0] = centre[j]
            coords[j, 1] = sample_points(m, 1, g)[0]
            x1, y1, x2, y2 = boxes[j].long().tolist()
            region = torch.zeros_like(m)
            region[y1:y2, x1:x2] = True
            region &= ~m
            coords[j, 2] = sample_points(region if region.any() else ~m, 1, g)[0]
        return {"box": {"boxes": boxes[None], "multimask_output": False},
                "point": {"points": centre[None, :, None], "labels": torch.ones(1, len(masks), 1, dtype=torch.long),
                          "multimask_output": True},
                "points": {"points": coords[None], "labels": labels[None], "multimask_output": False}}

    def predict_masks(self, model: nn.Module, embedding: torch.Tensor, prompts: dict[str, Any],
                      size: tuple[int, int]) -> torch.Tensor:
        """Head on one image's embedding ``(1, C, h, w)`` -> ``(M, S, S)`` bool masks (the candidate with the
        highest predicted IoU when several are returned)."""
        device = embedding.device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in prompts.items()}
        logits, iou = model.model[-1](embedding, **inputs)  # (1, M, K, h, w), (1, M, K)
        best = iou[0].argmax(-1)
        chosen = logits[0, torch.arange(logits.shape[1], device=device), best]
        return F.interpolate(chosen[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0] > 0

    @torch.no_grad()
    def validate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 loss_fn: nn.Module | None = None, progress: bool = False) -> dict[str, float]:
        was_training = model.training
        model.eval()
        meter = MaskIoUMeter()
        for batch in tqdm(loader, desc="  val", leave=False, disable=not progress, dynamic_ncols=True):
            img = self.normalise(batch["img"].to(device))
            embeddings = image_embedding(model, img)
            for i, masks in enumerate(batch["masks"]):
                masks = masks[masks.flatten(1).sum(1) >= 4][:VAL_MAX_INSTANCES]
                if len(masks) == 0:
                    continue
                for kind, prompts in self.eval_prompts(masks).items():
                    pred = self.predict_masks(model, embeddings[i:i + 1], prompts, masks.shape[-2:])
                    meter.update(pred.cpu(), masks, kind)
        model.train(was_training)
        return meter.compute()

    @torch.no_grad()
    def plot_predictions(self, model: nn.Module, batch: dict, path: Path) -> Path:
        """Per image: the ground truth masks | masks from box prompts (boxes drawn) | masks from point
        prompts (positive points green, negative red)."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        img = self.normalise(batch["img"].to(device))
        embeddings = image_embedding(model, img)
        images = []
        titles = ["ground truth", "box prompts", "point prompts"]
        for i in range(min(len(img), 6)):
            masks = batch["masks"][i]
            masks = masks[masks.flatten(1).sum(1) >= 4][:VAL_MAX_INSTANCES]
            rgb = self.image_rgb(batch, i)
            if len(masks) == 0:
                images.append(side_by_side([rgb, rgb, rgb], titles))
                continue
            prompts = self.eval_prompts(masks)
            size = masks.shape[-2:]
            by_box = self.predict_masks(model, embeddings[i:i + 1], prompts["box"], size).cpu().numpy()
            by_pts = self.predict_masks(model, embeddings[i:i + 1], prompts["points"], size).cpu().numpy()
            boxes = [tuple(float(v) for v in b) for b in prompts["box"]["boxes"][0]]
            points = [(float(x), float(y), int(lab)) for xy, lb in zip(prompts["points"]["points"][0],
                                                                       prompts["points"]["labels"][0])
                      for (x, y), lab in zip(xy.tolist(), lb.tolist())]
            gt = np.asarray(overlay_masks(rgb, list(masks.cpu().numpy().astype(bool))))
            images.append(side_by_side([gt, np.asarray(overlay_masks(rgb, list(by_box), boxes=boxes)),
                                        np.asarray(overlay_masks(rgb, list(by_pts), points=points))], titles))
        model.train(was_training)
        return save_grid(images, path, columns=1 if len(images) < 4 else 2)
