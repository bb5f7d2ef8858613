"""``zoo val CKPT_OR_CFG [--data D]``: validate a model and print its metrics table.

The metrics (``metrics.json``: every printed value and per-class AP50), a prediction image and, for
detection, a confusion matrix and PR curve are written to a new folder ``runs/val/val``, ``val2``, ...
(``--project`` / ``--name`` / ``--exist-ok`` as for ``zoo train``).

For a checkpoint written by ``zoo train`` the data and image size default to the ones it was
trained with; a YAML cfg is validated with freshly initialised weights (useful as a smoke test).

An exported file (``.onnx`` on ONNX Runtime, ``.torchscript``) is validated by the same task code, the
file doing the forward (:class:`zoo.export.ExportedModule`); its image size defaults to the one it was
exported at (a static graph takes no other), and the data must have the classes its metadata names.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

# zoo.data / zoo.engine (torch) are imported inside run: `zoo val --help` needs only add_arguments

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", metavar="CKPT_OR_CFG", help="checkpoint (.pt), model YAML, or an exported .onnx / .torchscript")
    p.add_argument("--data", help="dataset (default: what the checkpoint was trained on, else shapes)")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--imgsz", type=int, help="input size (default: the training size)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="", help="cpu, cuda or a GPU id")
    p.add_argument("--scale", help="scale key when validating a YAML cfg")
    p.add_argument("--weights", help="load these weights into the model first")
    p.add_argument("--conf", type=float, default=0.001, help="score threshold for mAP")
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--project", default="runs/val", help="parent folder of the output folder (default runs/val)")
    p.add_argument("--name", default="val", help="output folder name; numbered val2, val3 ... when taken")
    p.add_argument("--exist-ok", action="store_true", help="write into an existing --name folder")


def _training_args(path: str) -> dict:
    """The ``args`` a zoo training checkpoint was made with (empty for anything else)."""
    if not path.endswith((".pt", ".pth")):
        return {}
    try:
        from zoo.engine.training_checkpoint import load_training_checkpoint

        return dict(load_training_checkpoint(path).get("args") or {})
    except Exception:  # not one of ours: Model.load will still read it
        return {}


def _is_exported(path: str) -> bool:
    from zoo.export.module import is_exported_file

    return is_exported_file(path)


def _exported_for_task(args: argparse.Namespace, device):
    """``(model, task, imgsz)`` for an exported file, as ``build_for_task`` gives them for a checkpoint."""
    from zoo.engine.setup import TrainSetupError
    from zoo.engine.tasks.base import task_class
    from zoo.errors import ConfigError
    from zoo.export import load_exported

    for flag in ("weights", "scale"):
        if getattr(args, flag, None):
            raise ConfigError(f"--{flag} does not apply to an exported file ({args.cfg}): its weights are inside it")
    # no --device: ONNX Runtime's CUDA provider when it has one (torch's CUDA says nothing about it)
    model = load_exported(args.cfg, str(device) if args.device else "auto").as_module()
    if model.task not in ("detect", "classify"):
        raise ConfigError(f"{args.cfg}: zoo val runs exported detectors and classifiers, not '{model.task}' graphs")
    imgsz = model.check_imgsz(args.imgsz)
    task = task_class(model.task, args.cfg)(args, model)
    names = task.setup_data(imgsz)
    if names and len(names) != len(model.names):
        raise TrainSetupError(f"{args.cfg} predicts {len(model.names)} classes but the data has {len(names)}; "
                              "give --data with the classes it was trained on")
    return model, task, imgsz


def run(args: argparse.Namespace) -> int:
    from zoo.data.dataset import build_dataloader
    from zoo.engine.setup import build_for_task, select_device

    trained = _training_args(args.cfg)
    if args.data is None and trained.get("data"):
        args.data = trained["data"]
    if args.imgsz is None and trained.get("imgsz"):
        args.imgsz = trained["imgsz"]
    device = select_device(args.device)
    if _is_exported(args.cfg):
        model, task, imgsz = _exported_for_task(args, device)
    else:
        model, task, imgsz = build_for_task(args, verbose=False, partial_weights=False)
    model.to(device).eval()
    dataset = task.build_dataset(args.split, imgsz, augment=False)
    loader = build_dataloader(dataset, max(1, args.batch), task.collate, shuffle=False, workers=args.workers)
    t0 = time.time()
    metrics = task.validate(model, loader, device, loss_fn=None, progress=True)
    elapsed = time.time() - t0
    print(f"{getattr(model, 'name', args.cfg)} on {task.spec.where} ({args.split}, {len(dataset)} images), "
          f"imgsz {imgsz}, {elapsed:.1f}s")
    width = max(len(k) for k in metrics) + 2
    for key, value in metrics.items():
        print(f"  {key:<{width}}{value:.4f}")
    per_class = getattr(task, "per_class", None)
    if per_class:
        print(f"  {'class':<14}{'AP50':>8}")
        for name, ap in per_class.items():
            print(f"  {name:<14}{'-' if math.isnan(ap) else f'{ap:8.4f}':>8}")
    _save(args, task, model, loader, metrics, per_class, {
        "model": str(getattr(model, "name", args.cfg)), "weights": args.cfg, "data": task.spec.where,
        "split": args.split, "images": len(dataset), "imgsz": imgsz, "seconds": round(elapsed, 3)})
    return 0


def _save(args: argparse.Namespace, task, model, loader, metrics: dict, per_class: dict | None, info: dict) -> Path:
    """metrics.json and the plots into a fresh numbered folder; prints where."""
    from zoo.engine.run_folder import claim_run_folder

    folder = claim_run_folder(Path(args.project) / args.name, bool(args.exist_ok))
    record = {**info, "metrics": {k: float(v) for k, v in metrics.items()}}
    if per_class:
        record["per_class_ap50"] = {k: (None if math.isnan(v) else float(v)) for k, v in per_class.items()}
    (folder / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    try:
        batch = next(iter(loader))
        task.plot_predictions(model, batch, folder / "val_predictions.jpg")
    except StopIteration:
        pass
    except Exception as exc:  # plots never fail a validation that worked
        print(f"warning: plots not written ({type(exc).__name__}: {exc})")
    print(f"results saved to {folder}")
    return folder
