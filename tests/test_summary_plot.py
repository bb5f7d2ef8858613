"""zoo.summary_plot: ``zoo info --plot`` per-row chart and the sweep chart are real PNGs."""
from __future__ import annotations

from pathlib import Path

import yaml

from zoo.cli import main
from zoo.model import Model
from zoo.summary_plot import plot_rows, plot_sweep

PNG = b"\x89PNG\r\n\x1a\n"
TINY = {
    "nc": 3,
    "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]]],
    "head": [[-1, 1, "ClassifierHead", ["nc"]]],
}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_rows(tmp_path: Path) -> None:
    model = Model(TINY)
    info = model.info(imgsz=32, verbose=False)
    out = plot_rows(model, info, tmp_path / "sub" / "rows.png")
    w, h = _png_size(out)
    assert w >= 400 and h >= 300


def test_info_plot_cli(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    png = tmp_path / "info.png"
    assert main(["info", str(cfg), "--imgsz", "32", "--plot", str(png)]) == 0
    assert f"saved {png}" in capsys.readouterr().out
    _png_size(png)


def test_plot_sweep_handles_strings_missing_values_and_duplicates(tmp_path: Path) -> None:
    rows = [
        {"variant": "n", "params": "1000", "gflops_deploy": "0.5", "latency_ms": "2.0", "metric": "0.4",
         "metric_name": "top1", "imgsz": "32", "batch": "1", "device": "cpu"},
        {"variant": "s", "params": 4000, "gflops_deploy": 1.5, "latency_ms": 5.0, "metric": "", "metric_name": "top1"},
        {"variant": "s2", "params": 4000, "gflops_deploy": 1.5, "latency_ms": 5.0, "duplicate_of": "s"},
    ]
    _png_size(plot_sweep(rows, tmp_path / "a.png", trained=False, title="tiny"))
    _png_size(plot_sweep(rows, tmp_path / "b.png", trained=True))
    _png_size(plot_sweep([], tmp_path / "c.png"))
