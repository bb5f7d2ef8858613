"""Export time, file size and ONNX Runtime agreement for YOLOv10n and the two classifiers.

    python tools/bench_export.py [--runs 3] [--threads 1] [--dynamo]

Per model: ``Model.export`` to ONNX (``--dynamic``) timed ``--runs`` times (median; the first call
is included in the median's pool: it pays for the same deepcopy / deploy / trace every call does),
the file size, and the max abs difference of ONNX Runtime's output from the PyTorch deploy model's
eval output on two rendered shapes images. YOLOv10n gets its BatchNorm statistics from those images
first (random weights otherwise give all-equal scores, so detections would be compared by tie
order) and detections are paired row by row (closest row of the same class) before differencing;
the classifiers use the timm fixture weights from ../shared/fixtures when present.

``--dynamo``: also time torch's dynamo exporter (``torch.onnx.export(dynamo=True)``) on YOLOv10n with
the same dynamic axes, once, and print the ratio to the TorchScript-based exporter zoo uses.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import torch.nn.functional as F

from zoo import Model
from zoo.data.shapes import ShapesConfig, render_shapes
from zoo.export import OnnxModel
from zoo.export.graphs import ExportGraph, deployed_copy

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
CLASSIFIERS = {"mobilevit-xxs-cls": ("mobilevit_xxs", 256), "tinyvit-5m-cls": ("tiny_vit_5m_224", 224)}


def shapes_batch(n: int, size: int) -> torch.Tensor:
    images = [render_shapes(ShapesConfig(size=(size, size)), "val", i).image for i in range(n)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def calibrate_batchnorm(model: Model, images: torch.Tensor) -> None:
    """Running statistics = those of ``images`` (one train-mode pass), as tests/export does."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()


def paired_max_diff(ref: np.ndarray, out: np.ndarray, rows: int = 50) -> tuple[float, float]:
    """(max score diff, max box diff in pixels) over the ``rows`` best reference detections, each paired
    with the closest unused exported row of the same class."""
    used: set[int] = set()
    score_diff = box_diff = 0.0
    for row in ref[:rows]:
        cost = np.abs(out - row).max(1) + 1e9 * (out[:, 5] != row[5])
        cost[list(used)] = np.inf
        j = int(cost.argmin())
        used.add(j)
        score_diff = max(score_diff, abs(float(out[j, 4] - row[4])))
        box_diff = max(box_diff, float(np.abs(out[j, :4] - row[:4]).max()))
    return score_diff, box_diff


def build(name: str, images: torch.Tensor) -> Model:
    torch.manual_seed(0)
    model = Model(name).eval()
    if name in CLASSIFIERS:
        weights = FIXTURES / CLASSIFIERS[name][0] / "state_dict.pt"
        if weights.is_file():
            model.load(weights, verbose=False)
        return model
    calibrate_batchnorm(model, images)
    with torch.no_grad():
        for branch in model.head.one2one_cv3:
            branch[-1].bias.fill_(-3.0)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dynamo", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="bench_export_"))
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.runs} exports, dynamic axes")
    print(f"{'model':<20}{'export s':>10}{'MB':>8}  max abs diff ORT vs PyTorch (batch 2)")
    legacy_yolo = None
    for name, size in [("yolov10n", 320), *((n, s) for n, (_, s) in CLASSIFIERS.items())]:
        images = F.interpolate(shapes_batch(2, 320), size=(size, size), mode="bilinear", align_corners=False)
        model = build(name, images)
        path = folder / f"{name}.onnx"
        seconds = []
        for _ in range(args.runs):
            start = time.perf_counter()
            model.export(imgsz=size, dynamic=True, file=path)
            seconds.append(time.perf_counter() - start)
        deployed = copy.deepcopy(model).deploy().eval()
        with torch.no_grad():
            ref = deployed(images)
        out = OnnxModel(path)(images.numpy())
        if name == "yolov10n":
            legacy_yolo = statistics.median(seconds)
            pairs = [paired_max_diff(r, o) for r, o in zip(ref[0].numpy(), out)]
            diff = f"scores {max(p[0] for p in pairs):.2e}, boxes {max(p[1] for p in pairs):.2e} px (top 50 rows)"
        else:
            diff = f"probabilities {np.abs(out - ref.softmax(-1).numpy()).max():.2e}"
        print(f"{name:<20}{statistics.median(seconds):>10.2f}{path.stat().st_size / 1e6:>8.1f}  {diff}")
    if args.dynamo:
        images = shapes_batch(2, 320)
        model = build("yolov10n", images)
        graph = ExportGraph(deployed_copy(model), "detect", 300).eval()
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, "detections": {0: "batch"}}
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (images,), str(folder / "dynamo.onnx"), dynamo=True, verbose=False,
                              input_names=["images"], output_names=["detections"], dynamic_axes=axes)
        dynamo = time.perf_counter() - start
        session = onnxruntime.InferenceSession(str(folder / "dynamo.onnx"), providers=["CPUExecutionProvider"])
        big = F.interpolate(images, size=(640, 640), mode="bilinear", align_corners=False)
        with torch.no_grad():
            ref = graph(big).numpy()
        out = session.run(None, {session.get_inputs()[0].name: big.numpy()})[0]
        pairs = [paired_max_diff(r, o) for r, o in zip(ref, out)]
        print(f"yolov10n dynamo exporter: {dynamo:.1f} s, {dynamo / legacy_yolo:.0f}x the TorchScript-based one; "
              f"its graph at 640: scores {max(p[0] for p in pairs):.2e}, boxes {max(p[1] for p in pairs):.2e} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
