"""Exported ONNX graphs on ONNX Runtime against the PyTorch eager models they came from.

    python tools/bench_export_ort.py [--runs 10] [--only rtdetr-l,sam-encoder,sam-decoder] [--out DIR]

Per case: export time and file size, the max abs difference of the ONNX Runtime output from the
PyTorch eval output (detections: after pairing rows whose scores tie, see ``matched_max_diff``),
then latency. PyTorch side: the deployed model (BN folded, the CPU fast paths on, as ``zoo predict``
runs it) under ``torch.inference_mode``; ONNX Runtime: the CPU provider. Both sides get ``--threads``
intra-op threads (on a machine shared with other jobs, 1 gives steadier numbers: 2 threads each on
2 busy cores lose most of their time waiting for each other).
Timing: ``--warmup`` untimed calls per side, then ``--runs`` timed calls *interleaved* (ORT, torch,
torch, ORT, ...) so load from other processes hits both sides alike; medians, and ratio = ORT ms /
PyTorch ms with the quartiles of the per-round ratios.

Cases: ``rtdetr-l`` at 640 (random weights: no checkpoint ships), ``sam-encoder`` at 1024 and
``sam-decoder`` (two points, no box) on the MobileSAM fixture weights in ../shared/fixtures.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / ".." / "shared" / "fixtures"
CASES = ("rtdetr-l", "sam-encoder", "sam-decoder")


def interleaved(ort_fn: Callable[[], Any], torch_fn: Callable[[], Any], runs: int,
                warmup: int) -> tuple[float, float, tuple[float, float]]:
    """Median ms of each side and the quartiles of the per-round ratios ORT / PyTorch."""
    for _ in range(warmup):
        ort_fn()
        torch_fn()
    times: dict[str, list[float]] = {"ort": [], "torch": []}
    sides = [("ort", ort_fn), ("torch", torch_fn)]
    for i in range(runs):
        for name, fn in (sides if i % 2 == 0 else sides[::-1]):
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    ratios = sorted(o / t for o, t in zip(times["ort"], times["torch"]))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return statistics.median(times["ort"]), statistics.median(times["torch"]), (quartiles[0], quartiles[2])


def matched_max_diff(got: np.ndarray, expected: np.ndarray, tie: float = 1e-4) -> tuple[float, int]:
    """Max abs difference between detection rows ``(B, K, 6)`` after pairing each row of ``got`` with
    the closest unused row of ``expected`` of the same class and a score within ``tie`` (scores that
    tie to the 7th digit may sort either way); also how many rows sat at another position."""
    worst, moved = 0.0, 0
    for image_got, image_expected in zip(got, expected):
        unused = np.ones(len(image_expected), bool)
        for k, row in enumerate(image_got):
            candidates = unused & (image_expected[:, 5] == row[5]) & (np.abs(image_expected[:, 4] - row[4]) <= tie)
            if not candidates.any():
                continue  # a tie at the K-th score: its twin was kept instead
            diffs = np.where(candidates, np.abs(image_expected - row).max(-1), np.inf)
            best = int(diffs.argmin())
            unused[best] = False
            worst = max(worst, float(diffs[best]))
            moved += best != k
    return worst, moved


THREADS = {"intra_op": 2}


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = THREADS["intra_op"]
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def case_rtdetr(out: Path, runs: int, warmup: int) -> list[str]:
    from zoo import Model
    from zoo.export import export_model
    from zoo.export.graphs import deployed_copy

    torch.manual_seed(0)
    model = Model(REPO / "cfg" / "rtdetr-l.yaml").eval()
    start = time.perf_counter()
    path = export_model(model, "onnx", imgsz=640, file=out / "rtdetr-l.onnx")
    seconds = time.perf_counter() - start
    session = _session(path)
    deployed = deployed_copy(model)
    images = torch.rand(1, 3, 640, 640, generator=torch.Generator().manual_seed(1))
    feed = {"images": images.numpy()}
    got = session.run(None, feed)[0]
    with torch.inference_mode():
        expected = deployed(images)[0].numpy()
    diff, moved = matched_max_diff(got, expected)
    ort_ms, torch_ms, (q1, q3) = interleaved(lambda: session.run(None, feed), _inference(deployed, images), runs,
                                             warmup)
    return [f"rtdetr-l 640 | export {seconds:.1f} s | {path.stat().st_size / 1e6:.1f} MB | max diff {diff:.2e} "
            f"({moved} tied rows reordered) | ORT {ort_ms:.1f} ms | torch {torch_ms:.1f} ms | "
            f"ratio {ort_ms / torch_ms:.2f} [{q1:.2f}, {q3:.2f}]"]


def _inference(module: torch.nn.Module, *args: torch.Tensor) -> Callable[[], Any]:
    def call() -> Any:
        with torch.inference_mode():
            return module(*args)
    return call


def case_sam(out: Path, runs: int, warmup: int, which: tuple[str, ...]) -> list[str]:
    from zoo import Model
    from zoo.export.graphs import deployed_copy
    from zoo.export.sam import SamImageEncoder, export_sam_timed, prompt_arrays

    folder = FIXTURES / "mobile_sam"
    model = Model(REPO / "cfg" / "sam-tinyvit.yaml")
    model.load(folder / "mobile_sam.pt", verbose=False)
    model.eval()
    io = torch.load(folder / "io.pt", weights_only=True)
    written = export_sam_timed(model, out / "mobile_sam")
    deployed = deployed_copy(model)
    lines = []
    if "sam-encoder" in which:
        session = _session(written.encoder)
        encoder = SamImageEncoder(deployed)
        feed = {"images": io["image"].numpy()}
        got = session.run(None, feed)[0]
        with torch.inference_mode():
            _, kept = model.run_rows(io["image"], keep=(len(model.records) - 2,))
        diff = float(np.abs(got - kept[len(model.records) - 2].numpy()).max())
        ort_ms, torch_ms, (q1, q3) = interleaved(lambda: session.run(None, feed), _inference(encoder, io["image"]),
                                                 runs, warmup)
        lines.append(f"sam-encoder 1024 | export {written.encoder_seconds:.1f} s | "
                     f"{written.encoder.stat().st_size / 1e6:.1f} MB | max diff {diff:.2e} | ORT {ort_ms:.1f} ms | "
                     f"torch {torch_ms:.1f} ms | ratio {ort_ms / torch_ms:.2f} [{q1:.2f}, {q3:.2f}]")
    if "sam-decoder" in which:
        session = _session(written.decoder)
        coords, labels = prompt_arrays(io["point_coords"][0], io["point_labels"][0])
        embeddings = io["image_embeddings"]
        feed = {"image_embeddings": embeddings.numpy(), "point_coords": coords, "point_labels": labels,
                "mask_input": np.zeros((1, 1, 256, 256), np.float32), "has_mask_input": np.zeros(1, np.float32)}
        masks, iou = session.run(None, feed)
        head = model.model[-1]
        with torch.inference_mode():
            expected = head(embeddings, points=io["point_coords"], labels=io["point_labels"])
        diff = max(float(np.abs(masks - expected[0].numpy()).max()), float(np.abs(iou - expected[1].numpy()).max()))
        # the PyTorch side as SamPredictor runs it: the head on the cached embedding
        deployed_head = deployed.model[-1]

        def torch_fn() -> Any:
            with torch.inference_mode():
                return deployed_head(embeddings, points=io["point_coords"], labels=io["point_labels"])

        ort_ms, torch_ms, (q1, q3) = interleaved(lambda: session.run(None, feed), torch_fn, runs, warmup)
        lines.append(f"sam-decoder 2 points | export {written.decoder_seconds:.1f} s | "
                     f"{written.decoder.stat().st_size / 1e6:.1f} MB | max diff {diff:.2e} | ORT {ort_ms:.2f} ms | "
                     f"torch {torch_ms:.2f} ms | ratio {ort_ms / torch_ms:.2f} [{q1:.2f}, {q3:.2f}]")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of torch and of ONNX Runtime")
    parser.add_argument("--only", default=",".join(CASES), help=f"comma-separated cases of {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, help="folder for the exported files (default: a temporary one)")
    args = parser.parse_args(argv)
    cases = tuple(c.strip() for c in args.only.split(",") if c.strip())
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; choose from {', '.join(CASES)}")
    torch.set_num_threads(args.threads)
    THREADS["intra_op"] = args.threads
    warnings.filterwarnings("ignore")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads each side, runs {args.runs}, warmup {args.warmup}")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        if "rtdetr-l" in cases:
            lines += case_rtdetr(out, args.runs, args.warmup)
        sam_cases = tuple(c for c in cases if c.startswith("sam-"))
        if sam_cases:
            lines += case_sam(out, args.runs, args.warmup, sam_cases)
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
