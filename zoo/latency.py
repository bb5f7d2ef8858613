"""Latency, throughput and achieved GFLOP/s of a model at a given image size and batch.

Method: ``warmup`` untimed forwards (allocator, oneDNN / cuDNN autotuning, lazy init), then
``runs`` timed forwards of one batch each, in eval mode under ``torch.inference_mode``. On CUDA the
device is synchronised before starting and after finishing every run, so a run's time covers the
kernels and not just their launch. Reported: median and 90th-percentile milliseconds per batch,
images/s at the median, and achieved GFLOP/s = counted GFLOPs per image x batch / median seconds,
with GFLOPs counted by :mod:`zoo.summary` (the counting rule in the README) at the same image size.

:func:`benchmark_exported` times an exported file (ONNX Runtime session or TorchScript) the same way,
on a random ``float`` batch in 0..1 of the graph's input size; its GFLOPs are not counted (``n/a``).
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from zoo.errors import ZooError
from zoo.summary import summarize

if TYPE_CHECKING:
    from zoo.export.runtime import ExportedModel
    from zoo.model import Model

__all__ = ["BenchmarkError", "BenchResult", "benchmark", "benchmark_exported", "counted_gflops", "percentile",
           "resolve_device", "format_result"]


class BenchmarkError(ZooError):
    """A benchmark option cannot be honoured (device, half precision on CPU, run counts)."""


@dataclass
class BenchResult:
    device: str
    dtype: str
    imgsz: tuple[int, int]
    batch: int
    runs: int
    warmup: int
    median_ms: float  # per batch
    p90_ms: float
    mean_ms: float
    images_per_s: float
    gflops: float | None  # counted per image, batch 1
    gflops_per_s: float | None  # achieved: gflops * batch / median seconds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (0..100) of ``values`` (like ``numpy.percentile``)."""
    if not values:
        raise ValueError("percentile of an empty list")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def resolve_device(spec: str | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:1``, ``1`` or empty/``auto`` (CUDA when present)."""
    text = (spec or "").strip().lower()
    if text in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.isdigit():
        text = f"cuda:{text}"
    if not text.startswith("cuda"):
        raise BenchmarkError(f"--device {spec}: use cpu, cuda, cuda:N or N")
    if not torch.cuda.is_available():
        raise BenchmarkError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise BenchmarkError(f"--device {spec}: use cpu, cuda, cuda:N or N") from None
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise BenchmarkError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _hw(imgsz: int | tuple[int, int]) -> tuple[int, int]:
    return (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))


def counted_gflops(model: "Model", imgsz: int | tuple[int, int]) -> float | None:
    """Counted GFLOPs per image of ``model`` as it is (fused or not) at ``imgsz``; None if not countable."""
    return summarize(model, imgsz=_hw(imgsz), verbose=False, deploy=False)["gflops"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_counts(runs: int, warmup: int, batch: int) -> None:
    if runs < 1:
        raise BenchmarkError(f"--runs must be >= 1, got {runs}")
    if warmup < 0:
        raise BenchmarkError(f"--warmup must be >= 0, got {warmup}")
    if batch < 1:
        raise BenchmarkError(f"--batch must be >= 1, got {batch}")


def _timed_runs(forward: Callable[[], Any], runs: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    """Milliseconds of each of ``runs`` calls of ``forward`` after ``warmup`` untimed ones (the method)."""
    for _ in range(warmup):
        forward()
    sync()
    times: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        forward()
        sync()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def _result(times: list[float], device: str, dtype: str, hw: tuple[int, int], batch: int, warmup: int,
            gflops: float | None) -> BenchResult:
    median = statistics.median(times)
    achieved = gflops * batch / (median / 1000.0) if gflops is not None and median > 0 else None
    return BenchResult(
        device=device, dtype=dtype, imgsz=hw, batch=batch, runs=len(times), warmup=warmup, median_ms=median,
        p90_ms=percentile(times, 90), mean_ms=statistics.fmean(times),
        images_per_s=batch / (median / 1000.0) if median > 0 else float("inf"), gflops=gflops, gflops_per_s=achieved,
    )


def benchmark(model: "Model", imgsz: int | tuple[int, int] = 640, batch: int = 1, device: str | torch.device = "cpu",
              half: bool = False, runs: int = 20, warmup: int = 3, gflops: float | None = None,
              copy_model: bool = True) -> BenchResult:
    """Time ``model`` on random ``(batch, ch, H, W)`` inputs; see the module docstring for the method.

    ``gflops`` (per image) defaults to counting the model at ``imgsz``; pass it when already known.
    ``copy_model`` leaves the caller's model on its device and dtype.
    """
    _check_counts(runs, warmup, batch)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if half and dev.type != "cuda":
        raise BenchmarkError("--half needs a CUDA device (CPU half-precision convolutions are not a fair measure)")
    h, w = _hw(imgsz)
    if gflops is None:
        gflops = counted_gflops(model, (h, w))
    net = copy.deepcopy(model) if copy_model else model
    dtype = torch.float16 if half else torch.float32
    net = net.to(device=dev, dtype=dtype).eval()
    x = torch.rand(batch, getattr(model, "ch", 3), h, w, device=dev, dtype=dtype)
    with torch.inference_mode():
        times = _timed_runs(lambda: net(x), runs, warmup, lambda: _sync(dev))
    return _result(times, str(dev), str(dtype).replace("torch.", ""), (h, w), batch, warmup, gflops)


def benchmark_exported(model: "ExportedModel", imgsz: int | tuple[int, int] | None = None, batch: int | None = None,
                       runs: int = 20, warmup: int = 3) -> BenchResult:
    """Time an exported file's runtime on a random 0..1 batch (numpy in, numpy out: the runtime's own call).

    ``imgsz`` / ``batch`` default to the graph's; a static graph refuses others in one line. ``device``
    in the result names the runtime (``onnxruntime:CPUExecutionProvider``, ``torchscript:cpu``)."""
    batch = int(batch or model.batch)
    _check_counts(runs, warmup, batch)
    h, w = _hw(imgsz) if imgsz is not None else tuple(model.imgsz)
    model.check_input((batch, 3, h, w))
    x = np.random.default_rng(0).random((batch, 3, h, w), dtype=np.float32)
    times = _timed_runs(lambda: model.run(x), runs, warmup, lambda: None)  # the runtimes return finished arrays
    providers = getattr(model, "providers", None)
    device = f"onnxruntime:{providers[0]}" if providers else f"torchscript:{getattr(model, 'device', 'cpu')}"
    return _result(times, device, "float16" if model.half else "float32", (h, w), batch, warmup, None)


def format_result(name: str, r: BenchResult) -> str:
    gf = f"{r.gflops:.4g}" if r.gflops is not None else "n/a"
    achieved = f"{r.gflops_per_s:.1f}" if r.gflops_per_s is not None else "n/a"
    return "\n".join([
        f"{name}: {r.imgsz[0]}x{r.imgsz[1]}, batch {r.batch}, {r.device} {r.dtype}, "
        f"{r.warmup} warm-up + {r.runs} timed runs",
        f"  latency   median {r.median_ms:.2f} ms   p90 {r.p90_ms:.2f} ms   mean {r.mean_ms:.2f} ms  (per batch)",
        f"  throughput {r.images_per_s:.1f} images/s",
        f"  compute   {gf} GFLOPs/image counted -> {achieved} GFLOP/s achieved",
    ])
