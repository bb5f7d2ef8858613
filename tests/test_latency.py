"""zoo.latency and ``zoo benchmark``: statistics, achieved GFLOP/s, option errors (no timed assertions)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.latency import BenchmarkError, benchmark, counted_gflops, percentile, resolve_device
from zoo.cli import main
from zoo.model import Model

TINY = {
    "nc": 3,
    "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]]],
    "head": [[-1, 1, "ClassifierHead", ["nc"]]],
}


@pytest.mark.parametrize("q", [0, 10, 50, 90, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = [5.0, 1.0, 9.0, 3.0, 7.5, 2.25, 8.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    with pytest.raises(ValueError):
        percentile([], 50)


def test_benchmark_numbers_are_consistent() -> None:
    model = Model(TINY)
    r = benchmark(model, imgsz=32, batch=2, device="cpu", runs=5, warmup=1)
    assert r.runs == 5 and r.batch == 2 and r.imgsz == (32, 32) and r.device == "cpu" and r.dtype == "float32"
    assert 0 < r.median_ms <= r.p90_ms
    assert r.images_per_s == pytest.approx(2 / (r.median_ms / 1000))
    assert r.gflops == pytest.approx(counted_gflops(model, 32))
    assert r.gflops_per_s == pytest.approx(r.gflops * 2 / (r.median_ms / 1000))
    # the caller's model is left in place (not moved, not switched to eval)
    model.train()
    benchmark(model, imgsz=32, runs=1, warmup=0)
    assert model.training


def test_counted_gflops_follow_the_conv_formula() -> None:
    model = Model({"backbone": [[-1, 1, "nn.Conv2d", [4, 3, 1, 1, 1, 1, False]]]})
    # 2 * MACs: out 4x16x16 positions, each 3*3*3 MACs
    assert counted_gflops(model, 16) == pytest.approx(2 * 4 * 16 * 16 * 27 / 1e9)


def test_option_errors() -> None:
    model = Model(TINY)
    with pytest.raises(BenchmarkError, match="CUDA"):
        benchmark(model, imgsz=32, device="cpu", half=True)
    with pytest.raises(BenchmarkError, match="runs"):
        benchmark(model, imgsz=32, runs=0)
    with pytest.raises(BenchmarkError, match="batch"):
        benchmark(model, imgsz=32, batch=0)
    with pytest.raises(BenchmarkError, match="use cpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BenchmarkError, match="CUDA is not available"):
            resolve_device("cuda")


def test_cli_benchmark(tmp_path: Path, capsys) -> None:
    import yaml

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["benchmark", str(cfg), "--imgsz", "32", "--runs", "3", "--warmup", "1", "--fuse", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "32x32, batch 2, cpu float32, 1 warm-up + 3 timed runs" in out
    assert "median" in out and "p90" in out and "images/s" in out and "GFLOP/s achieved" in out
    assert main(["benchmark", str(cfg), "--imgsz", "32", "--half"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--half" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_half() -> None:
    r = benchmark(Model(TINY), imgsz=64, device="cuda", half=True, runs=3, warmup=1)
    assert r.dtype == "float16" and r.device.startswith("cuda") and r.median_ms > 0
