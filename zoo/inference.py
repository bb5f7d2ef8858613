"""Image inference behind :meth:`zoo.model.Model.predict`: sources in, one :class:`~zoo.results.Results` per image out.

Sources: an image file, a folder (searched recursively for images), a list of any of these, a
``PIL.Image``, a numpy array (``(H, W, 3)`` RGB, ``(H, W)`` grey, ``(H, W, 4)`` RGBA, or a batch
``(B, H, W, 3)``) or a torch tensor (``(3, H, W)`` or ``(B, 3, H, W)``). Integer pixels are 0..255,
float pixels 0..1 (clipped).

Each image goes through the same steps as ``zoo predict``: detectors get a letterbox to
``imgsz`` x ``imgsz``, classifiers a centre crop; pixels are normalised as in training
(:mod:`zoo.data.normalise`); the model runs in eval mode under ``no_grad``; detections come from the
head contract (:mod:`zoo.nn.heads`) and are mapped back to the original image's pixels.

``model`` is a zoo Model or anything with the same small interface (``task``, ``names``, ``name``,
parameters for the device, the head contract's forward), such as an exported file behind
:class:`zoo.export.ExportedModule`: one predict path for both.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from zoo.data.normalise import InputNormaliser
from zoo.data.problems import IMAGE_SUFFIXES
from zoo.data.transforms import center_crop_resize, letterbox
from zoo.errors import DataError, ZooError
from zoo.nn.heads import detect
from zoo.results import Results

__all__ = ["PREDICT_TASKS", "DEFAULT_IMGSZ", "SourceImage", "load_images", "predict", "predict_imgsz"]

# the size a task predicts at when neither the call, the checkpoint nor the cfg says; the same as the
# training tasks' defaults (zoo.engine.tasks: DetectTask / ClassifyTask.default_imgsz), which the
# model layer cannot import; tests/test_inference.py checks they agree
DEFAULT_IMGSZ = {"detect": 320, "classify": 224}
PREDICT_TASKS = tuple(DEFAULT_IMGSZ)


@dataclass
class SourceImage:
    """One loaded image: ``(H, W, 3)`` uint8 RGB, the file it came from, a display name."""

    rgb: np.ndarray
    path: str | None
    name: str


def _rgb(array: np.ndarray, what: str) -> np.ndarray:
    """An ``(H, W)``, ``(H, W, 1|3|4)`` array (uint8 0..255, or float 0..1) -> ``(H, W, 3)`` uint8 RGB."""
    if array.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(array.dtype, np.floating) else 1.0  # float pixels are 0..1
        array = np.clip(np.nan_to_num(array.astype(np.float64) * scale), 0, 255).round().astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape[:2]:
        raise DataError(f"{what}: expected an HxWx3 RGB image array, got shape {tuple(array.shape)}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def _read_file(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise DataError(f"cannot read image '{path}': {type(exc).__name__}: {exc}") from None


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"source folder '{path}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return found
    if path.is_file():
        return [path]
    raise DataError(f"source '{path}' does not exist")


def load_images(source: Any) -> Iterator[SourceImage]:
    """The images a source holds, in order (lazily: a folder's files are read one at a time)."""
    counter = iter(range(1 << 62))

    def walk(src: Any) -> Iterator[SourceImage]:
        if isinstance(src, (str, Path)):
            for f in _files(Path(src)):
                next(counter)
                yield SourceImage(_read_file(f), str(f), f.name)
        elif isinstance(src, Image.Image):
            i, file = next(counter), getattr(src, "filename", None) or None  # set by Image.open
            yield SourceImage(np.asarray(src.convert("RGB")), file, Path(file).name if file else f"image{i}")
        elif isinstance(src, torch.Tensor):
            t = src.detach().cpu()
            t = t.float() if t.is_floating_point() else t  # half / bfloat16 have no numpy dtype
            if t.dim() == 3:
                t = t[None]
            if t.dim() != 4 or t.shape[1] not in (1, 3):
                raise DataError(f"tensor source: expected (3, H, W) or (B, 3, H, W), got {tuple(src.shape)}")
            for im in t.permute(0, 2, 3, 1).numpy():
                yield SourceImage(_rgb(im, "tensor source"), None, f"image{next(counter)}")
        elif isinstance(src, np.ndarray):
            for im in (src if src.ndim == 4 else [src]):
                yield SourceImage(_rgb(im, "array source"), None, f"image{next(counter)}")
        elif isinstance(src, (list, tuple)):
            for item in src:
                yield from walk(item)
        else:
            raise DataError(f"cannot predict on a {type(src).__name__}: give a path, a folder, a PIL image, "
                            "a numpy array, a torch tensor or a list of these")

    yield from walk(source)


def predict_imgsz(model: Any, imgsz: int | None) -> int:
    """The input size: ``imgsz``, else the size the checkpoint was trained at, else the cfg's
    ``imgsz``, else the task's default (the rule ``zoo predict`` follows). A model with a
    ``check_imgsz`` (an exported graph, which takes only some sizes) decides itself."""
    check = getattr(model, "check_imgsz", None)
    if check is not None:
        return int(check(imgsz))
    size = imgsz or getattr(model, "imgsz", None) or (model.yaml or {}).get("imgsz") or DEFAULT_IMGSZ.get(model.task)
    return int(size)


def _chunks(items: Iterator[SourceImage], n: int) -> Iterator[list[SourceImage]]:
    chunk: list[SourceImage] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@torch.no_grad()
def _detect(model: Any, chunk: Sequence[SourceImage], size: int, conf: float, max_det: int,
            normalise: InputNormaliser, device: torch.device) -> list[dict[str, Any]]:
    boxed = [letterbox(im.rgb, np.zeros((0, 4), np.float32), None, size) for im in chunk]
    x = torch.cat([normalise.image(b[0], device) for b in boxed])
    dets, _ = detect(model, x, max_det, conf)
    out = []
    for im, (_, _, _, place, _), d in zip(chunk, boxed, dets.float().cpu()):
        d = d[d[:, 4] > conf].numpy().copy()
        h, w = im.rgb.shape[:2]
        d[:, [0, 2]] = ((d[:, [0, 2]] - place.pad_x) / place.ratio).clip(0, w)
        d[:, [1, 3]] = ((d[:, [1, 3]] - place.pad_y) / place.ratio).clip(0, h)
        out.append({"boxes": d[:, :4].astype(np.float32), "scores": d[:, 4].astype(np.float32),
                    "cls": d[:, 5].astype(np.int64)})
    return out


@torch.no_grad()
def _classify(model: Any, chunk: Sequence[SourceImage], size: int, normalise: InputNormaliser,
              device: torch.device) -> list[dict[str, Any]]:
    x = torch.cat([normalise.image(center_crop_resize(im.rgb, size), device) for im in chunk])
    probs = model(x).float().softmax(-1).cpu().numpy()
    return [{"probs": p} for p in probs]


def predict(model: Any, source: Any, conf: float = 0.25, imgsz: int | None = None, max_det: int = 300,
            device: str | torch.device | None = None, batch: int = 1) -> list[Results]:
    """Run ``model`` (a detector or a classifier) on every image of ``source``; see the module docstring."""
    task = model.task
    if task not in PREDICT_TASKS:
        hint = ("use zoo.SamPredictor(model): set_image(rgb) then predict(point_coords=..., box=...)"
                if task == "segment" else "predict serves detection and classification heads")
        raise ZooError(f"{model.name}: Model.predict does not serve '{task}' models; {hint}")
    if batch < 1 or max_det < 1:
        raise ValueError(f"batch and max_det must be >= 1, got batch={batch}, max_det={max_det}")
    size = predict_imgsz(model, imgsz)
    if device is not None:
        model.to(torch.device(device))
    dev = next(model.parameters()).device
    normalise = InputNormaliser.for_model(model)
    was_training = model.training
    model.eval()
    results: list[Results] = []
    try:
        for chunk in _chunks(load_images(source), batch):
            start = time.perf_counter()
            if task == "detect":
                outputs = _detect(model, chunk, size, conf, max_det, normalise, dev)
            else:
                outputs = _classify(model, chunk, size, normalise, dev)
            ms = (time.perf_counter() - start) * 1000 / len(chunk)
            results += [Results(im.rgb, im.path, im.name, dict(model.names), task, speed_ms={"inference": ms}, **o)
                        for im, o in zip(chunk, outputs)]
    finally:
        model.train(was_training)
    return results
