"""``zoo predict CKPT_OR_CFG SOURCE`` (or ``--source SOURCE``): run a model on images and write overlays.

- detection heads (v10Detect, RTDETRDecoder): boxes with class names and scores above ``--conf``;
- classifiers: the top class and its probability written above the image;
- SAM: masks for the ``--points`` / ``--box`` prompts, or with ``--everything`` every mask from a point grid
  (see :mod:`zoo.commands.predict_sam` and :mod:`zoo.automatic_masks`).

Images are letterboxed (detection) or centre-cropped (classification) to ``--imgsz`` (default:
the size the checkpoint was trained at, else the cfg's ``imgsz``, else the task's default, 320 /
224), normalised as in training (:mod:`zoo.data.normalise`), and drawn at their original resolution,
one file per image. Detections come from the head contract (:mod:`zoo.nn.heads`), so any detection head works.

An exported ``.onnx`` (ONNX Runtime: the CPU provider, the CUDA one with ``--device cuda``) or
``.torchscript`` file runs through this same code (:class:`zoo.export.ExportedModule`): the same
letterbox / centre crop, boxes mapped back to the original pixels, class names from the file's
metadata, the same images, labels and JSON. Its size defaults to the one it was exported at; a static
graph refuses another ``--imgsz`` (re-export, or export with ``--dynamic``).

Outputs go to ``--project``/``--name`` (default ``runs/predict/predict``), numbered like training runs
(``predict2``, ...; ``--exist-ok`` reuses the folder), or into ``--out`` as is. The folder is claimed when
the first image has been read, so a run where no input can be read leaves nothing behind. Each input gets
its own output name: two inputs with the same stem (``a/img.png``, ``b/img.jpg``) are written as
``img_pred.png`` and ``img_2_pred.png``. ``--save-txt`` adds ``labels/<name>.txt`` per image (detection:
``cls cx cy w h score`` normalised to the image; classification: ``cls prob``, top 5) and ``--save-json``
one ``predictions.json`` with every image's results. Unreadable inputs are skipped with a warning.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from zoo.commands.predict_args import add_arguments  # re-exported; the CLI reads it from predict_args
from zoo.commands.predict_sam import draw_sam, everything_summary, mask_summary, segment_everything, segment_image
from zoo.data.normalise import InputNormaliser
from zoo.data.sources import list_images
from zoo.data.transforms import center_crop_resize, letterbox
from zoo.engine.training_checkpoint import load_training_checkpoint
from zoo.engine.plotting import draw_boxes, draw_label
from zoo.engine.run_folder import claim_run_folder
from zoo.engine.tasks.base import TASKS
from zoo.errors import DataError, ZooError
from zoo.export import is_exported_file, load_exported
from zoo.model import build_model
from zoo.nn.heads import detect

__all__ = ["add_arguments", "run", "PredictError", "detect_image", "classify_image", "PredictOutputs",
           "detection_lines", "classification_lines"]

# the tasks whose heads draw on one image at a time here (SAM's "segment" takes prompts: predict_sam)
IMAGE_TASKS = ("detect", "classify")
DEFAULT_PROJECT, DEFAULT_NAME = "runs/predict", "predict"
TOP_K = 5


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


def _source(args: argparse.Namespace) -> Path:
    """The positional SOURCE or ``--source``: exactly one of them."""
    positional, option = args.source, getattr(args, "source_option", None)
    if positional is not None and option is not None:
        raise PredictError(f"give the source once: positional '{positional}' or --source '{option}', not both")
    if positional is None and option is None:
        raise PredictError("no source: zoo predict CKPT_OR_CFG SOURCE (an image, a folder or a .txt list)")
    return Path(positional if positional is not None else option)


def _images(source: Path) -> list[Path]:
    if not source.exists():
        raise DataError(f"source '{source}' does not exist")
    images = list_images(source)
    if not images:
        raise DataError(f"source '{source}' holds no images")
    return images


def _read(path: Path) -> np.ndarray | None:
    """The RGB pixels of ``path``, or None (with a warning line on stderr) when it cannot be read."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # a broken file among many should not stop the rest
        print(f"zoo predict: warning: skipped {path} ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None


class PredictOutputs:
    """Where one ``zoo predict`` writes: a folder claimed on first use, a distinct name per input,
    ``labels/<name>.txt`` and the records that become ``predictions.json``."""

    def __init__(self, args: argparse.Namespace) -> None:
        project, name = getattr(args, "project", None), getattr(args, "name", None)
        self.out = getattr(args, "out", None)
        if self.out and (project or name):
            raise PredictError("--out names the output folder itself; do not combine it with --project / --name")
        self.target = Path(project or DEFAULT_PROJECT) / (name or DEFAULT_NAME)
        self.exist_ok = bool(getattr(args, "exist_ok", False))
        self.save_txt, self.save_json = bool(getattr(args, "save_txt", False)), bool(getattr(args, "save_json", False))
        self.folder: Path | None = None
        self.records: list[dict[str, Any]] = []
        self._taken: set[str] = set()

    def claim(self) -> Path:
        if self.folder is None:
            if self.out:
                self.folder = Path(self.out)
                self.folder.mkdir(parents=True, exist_ok=True)
            else:
                self.folder = claim_run_folder(self.target, self.exist_ok)
        return self.folder

    def name_for(self, source: Path) -> str:
        """``source``'s stem, or ``stem_2``, ``stem_3``, ... when an earlier input of this run took it."""
        key, n = source.stem, 2
        while key.lower() in self._taken:  # case-insensitive: distinct on every file system
            key, n = f"{source.stem}_{n}", n + 1
        self._taken.add(key.lower())
        return key

    def save_image(self, pixels: np.ndarray, name: str) -> Path:
        path = self.claim() / name
        Image.fromarray(pixels).save(path)
        return path

    def write_labels(self, name: str, lines: list[str]) -> None:
        if self.save_txt:
            labels = self.claim() / "labels"
            labels.mkdir(exist_ok=True)
            (labels / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines))

    def add_record(self, record: dict[str, Any]) -> None:
        if self.save_json:
            self.records.append(record)

    def finish(self, header: dict[str, Any]) -> None:
        if self.save_json:
            path = self.claim() / "predictions.json"
            path.write_text(json.dumps({**header, "images": self.records}, indent=1) + "\n")


def _name(names: list[str], c: int) -> str:
    return names[c] if 0 <= c < len(names) else str(c)


def detection_lines(dets: np.ndarray, width: int, height: int) -> list[str]:
    """YOLO label lines ``cls cx cy w h score``, coordinates normalised to the image size."""
    lines = []
    for x1, y1, x2, y2, score, cls in dets.tolist():
        cx, cy, w, h = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f} {score:.6f}")
    return lines


def classification_lines(probs: np.ndarray, k: int = TOP_K) -> list[str]:
    """``cls prob`` for the ``k`` most probable classes, most probable first."""
    top = np.argsort(-probs, kind="stable")[:k]
    return [f"{int(c)} {float(probs[c]):.6f}" for c in top]


@torch.no_grad()
def detect_image(model: torch.nn.Module, image: np.ndarray, imgsz: int, conf: float, max_det: int
                 ) -> np.ndarray:
    """Detections ``(K, 6)`` x1, y1, x2, y2 (original-image pixels), score, class for one RGB image."""
    device = next(model.parameters()).device
    boxed, _, _, place, _ = letterbox(image, np.zeros((0, 4), np.float32), None, imgsz)
    dets, _ = detect(model, InputNormaliser.for_model(model).image(boxed, device), max_det, conf)
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


def _load_model(args: argparse.Namespace) -> torch.nn.Module:
    """The model to run, in eval mode on ``--device``: a checkpoint / cfg (with ``--weights``), or an
    exported file behind the same interface."""
    if is_exported_file(args.cfg):
        for flag in ("weights", "scale"):
            if getattr(args, flag, None):
                raise PredictError(f"--{flag} does not apply to an exported file ({args.cfg}): its weights are inside it")
        return load_exported(args.cfg, args.device).as_module().eval()
    model = build_model(args.cfg, args.scale, None, list(getattr(args, "plugin", None) or []),
                        bool(getattr(args, "trust_plugins", False)))
    if args.weights:
        model.load(args.weights, verbose=True).require_fit("predicting with it would use random weights")
    return model.to(torch.device(args.device)).eval()


def run(args: argparse.Namespace) -> int:
    source = _source(args)
    outputs = PredictOutputs(args)
    info = _checkpoint_info(args.cfg)
    model = _load_model(args)
    task = model.task
    trained_size = (info.get("args") or {}).get("imgsz")
    names = list(info.get("names") or [model.names[i] for i in sorted(model.names)])
    if task == "segment":
        everything = bool(getattr(args, "everything", False))
        if everything and (args.points or args.box):
            raise PredictError("--everything prompts with a point grid; leave out --points / --box")
        if not everything and not args.points and not args.box:
            raise PredictError("SAM needs prompts: --points x,y[,label] ... and/or --box x1,y1,x2,y2")
        if outputs.save_txt:
            raise PredictError("--save-txt writes detection / classification labels; for SAM use --save-json")
        imgsz = args.imgsz or trained_size
    elif task in IMAGE_TASKS and hasattr(model, "check_imgsz"):  # an exported graph takes only some sizes
        imgsz = model.check_imgsz(args.imgsz)
    elif task in IMAGE_TASKS:
        imgsz = int(args.imgsz or trained_size or model.yaml.get("imgsz") or TASKS.get(task).default_imgsz)
    else:
        what = f"head {type(model.model[-1]).__name__}" if hasattr(model, "model") else str(args.cfg)
        raise PredictError(f"zoo predict does not know the task '{task}' of {what}")
    images = _images(source)
    done = 0
    for path in images:
        image = _read(path)
        if image is None:
            continue
        name, (height, width) = outputs.name_for(path), image.shape[:2]
        record: dict[str, Any] = {"file": str(path), "width": width, "height": height}
        if task == "detect":
            dets = detect_image(model, image, imgsz, args.conf, args.max_det)
            classes = dets[:, 5].astype(np.int64)
            drawn = draw_boxes(image, dets[:, :4], classes, names, dets[:, 4])
            written = outputs.save_image(drawn, f"{name}_pred.png")
            outputs.write_labels(name, detection_lines(dets, width, height))
            record.update(boxes=np.round(dets[:, :4], 2).tolist(), scores=np.round(dets[:, 4], 6).tolist(),
                          classes=classes.tolist(), names=[_name(names, int(c)) for c in classes])
            summary = f"{len(dets)} detections"
        elif task == "classify":
            probs = classify_image(model, image, imgsz)
            top = int(probs.argmax())
            summary = f"{_name(names, top)} {float(probs[top]):.2f}"
            written = outputs.save_image(draw_label(image, summary), f"{name}_pred.png")
            outputs.write_labels(name, classification_lines(probs))
            record["top5"] = [{"class": int(c), "name": _name(names, int(c)), "prob": round(float(probs[c]), 6)}
                              for c in np.argsort(-probs, kind="stable")[:TOP_K]]
        elif everything:
            try:
                found = segment_everything(model, image, int(getattr(args, "points_per_side", 32)), input_size=imgsz)
            except ValueError as exc:
                raise PredictError(str(exc)) from None
            written = draw_sam(image, [f["segmentation"] for f in found], [], [], outputs.claim() / f"{name}_sam.png")
            record["masks"] = [everything_summary(f) for f in found]
            summary = f"{len(found)} mask{'s' if len(found) != 1 else ''} (everything)"
        else:
            try:
                masks, scores = segment_image(model, image, list(args.points), list(args.box), input_size=imgsz)
            except ValueError as exc:
                raise PredictError(str(exc)) from None
            written = draw_sam(image, masks, list(args.points), list(args.box), outputs.claim() / f"{name}_sam.png")
            record["masks"] = [mask_summary(m, s) for m, s in zip(masks, scores)]
            summary = f"{len(masks)} mask{'s' if len(masks) != 1 else ''}"
        record["output"] = written.name
        outputs.add_record(record)
        done += 1
        print(f"{path} -> {written} ({summary})")
    if not done:
        where = f"; {outputs.folder} was left as it was" if outputs.folder is not None else ""
        raise PredictError(f"none of the {len(images)} input image(s) could be read (see the warnings above){where}")
    outputs.finish({"task": task, "model": str(args.cfg), "imgsz": imgsz, "names": names})
    skipped = len(images) - done
    print(f"{done} image(s) -> {outputs.folder}" + (f" ({skipped} unreadable, skipped)" if skipped else ""))
    return 0
