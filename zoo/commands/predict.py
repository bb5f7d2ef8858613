"""``zoo predict CKPT_OR_CFG --source IMG_OR_DIR``: run a model on images and write overlays.

- detection heads (v10Detect, RTDETRDecoder): boxes with class names and scores above ``--conf``;
- classifiers: the top class and its probability written above the image;
- SAM: masks for the ``--points`` / ``--box`` prompts (see :mod:`zoo.commands.predict_sam`).

Images are letterboxed (detection) or centre-cropped (classification) to ``--imgsz`` (default:
the size the checkpoint was trained at, else the cfg's ``imgsz``, else the task's default, 320 /
224), normalised as in training (:mod:`zoo.data.normalise`), and drawn at their original resolution
into ``--out`` (default ``runs/predict``), one file per image. Detections come from the head contract
(:mod:`zoo.nn.heads`), so any detection head works.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from zoo.commands.predict_args import add_arguments  # re-exported; the CLI reads it from predict_args
from zoo.commands.predict_sam import predict_sam
from zoo.data.normalise import InputNormaliser
from zoo.data.sources import list_images
from zoo.data.transforms import center_crop_resize, letterbox
from zoo.engine.training_checkpoint import load_training_checkpoint
from zoo.engine.plotting import draw_boxes, draw_label
from zoo.engine.tasks.base import TASKS
from zoo.errors import DataError, ZooError
from zoo.model import build_model
from zoo.nn.heads import detect

__all__ = ["add_arguments", "run", "PredictError", "detect_image", "classify_image"]

# the tasks whose heads draw on one image at a time here (SAM's "segment" takes prompts: predict_sam)
IMAGE_TASKS = ("detect", "classify")


class PredictError(ZooError):
    """A prediction request that cannot be served (no prompts for SAM, unknown head, ...)."""


def _checkpoint_info(path: str) -> dict[str, Any]:
    """``names`` / ``args`` stored by ``zoo train`` (empty for other files)."""
    if not path.endswith((".pt", ".pth")):
        return {}
    try:
        return dict(load_training_checkpoint(path))
    except Exception:  # a foreign checkpoint: Model.load still reads its weights
        return {}


def _images(source: Path) -> list[Path]:
    if not source.exists():
        raise DataError(f"--source '{source}' does not exist")
    images = list_images(source)
    if not images:
        raise DataError(f"--source '{source}' holds no images")
    return images


@torch.no_grad()
def detect_image(model: torch.nn.Module, image: np.ndarray, imgsz: int, conf: float, max_det: int
                 ) -> np.ndarray:
    """Detections ``(K, 6)`` x1, y1, x2, y2 (original-image pixels), score, class for one RGB image."""
    device = next(model.parameters()).device
    boxed, _, _, place, _ = letterbox(image, np.zeros((0, 4), np.float32), None, imgsz)
    dets, _ = detect(model, InputNormaliser.for_model(model).image(boxed, device), max_det)
    dets = dets[0].float().cpu()
    dets = dets[dets[:, 4] > conf].numpy().copy()
    dets[:, [0, 2]] = ((dets[:, [0, 2]] - place.pad_x) / place.ratio).clip(0, image.shape[1])
    dets[:, [1, 3]] = ((dets[:, [1, 3]] - place.pad_y) / place.ratio).clip(0, image.shape[0])
    return dets


@torch.no_grad()
def classify_image(model: torch.nn.Module, image: np.ndarray, imgsz: int) -> np.ndarray:
    """Class probabilities ``(nc,)`` for one RGB image (centre crop, as in validation)."""
    device = next(model.parameters()).device
    logits = model(InputNormaliser.for_model(model).image(center_crop_resize(image, imgsz), device))
    return logits.float().softmax(-1)[0].cpu().numpy()


def run(args: argparse.Namespace) -> int:
    info = _checkpoint_info(args.cfg)
    model = build_model(args.cfg, args.scale, None, list(getattr(args, "plugin", None) or []),
                        bool(getattr(args, "trust_plugins", False)))
    if args.weights:
        model.load(args.weights, verbose=True).require_fit("predicting with it would use random weights")
    model.to(torch.device(args.device)).eval()
    task = model.task
    trained_size = (info.get("args") or {}).get("imgsz")
    names = list(info.get("names") or [model.names[i] for i in sorted(model.names)])
    out_dir = Path(args.out)
    images = _images(Path(args.source))
    if task == "segment":
        if not args.points and not args.box:
            raise PredictError("SAM needs prompts: --points x,y[,label] ... and/or --box x1,y1,x2,y2")
        size = args.imgsz or trained_size
        for path in images:
            try:
                written = predict_sam(model, path, list(args.points), list(args.box), out_dir, input_size=size)
            except ValueError as exc:
                raise PredictError(str(exc)) from None
            print(f"{path} -> {written}")
        return 0
    if task not in IMAGE_TASKS:
        raise PredictError(f"zoo predict does not know the task '{task}' of head {type(model.model[-1]).__name__}")
    imgsz = int(args.imgsz or trained_size or model.yaml.get("imgsz") or TASKS.get(task).default_imgsz)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in images:
        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except Exception as exc:  # a broken file among many should not stop the rest
            print(f"warning: skipped {path} ({type(exc).__name__}: {exc})")
            continue
        if task == "detect":
            dets = detect_image(model, image, imgsz, args.conf, args.max_det)
            drawn = draw_boxes(image, dets[:, :4], dets[:, 5].astype(np.int64), names, dets[:, 4])
            summary = f"{len(dets)} detections"
        else:
            probs = classify_image(model, image, imgsz)
            top = int(probs.argmax())
            label = names[top] if top < len(names) else str(top)
            drawn = draw_label(image, f"{label} {float(probs[top]):.2f}")
            summary = f"{label} {float(probs[top]):.2f}"
        written = out_dir / f"{path.stem}_pred.png"
        Image.fromarray(drawn).save(written)
        print(f"{path} -> {written} ({summary})")
    return 0
