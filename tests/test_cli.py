"""CLI: ``main(argv)`` for info and list."""
from __future__ import annotations

import pytest

from zoo.cli import main

from zoo_test_paths import CFG


@pytest.fixture(autouse=True)
def _outside_the_repo(tmp_path, monkeypatch):
    """Run every command from a folder outside the repo, as a user of the installed package would."""
    monkeypatch.chdir(tmp_path)


def test_info_prints_rows_and_summary(capsys):
    assert main(["info", str(CFG / "yolov10n.yaml"), "--imgsz", "320"]) == 0
    out = capsys.readouterr().out
    assert "v10Detect" in out and "summary: " in out and "2,775,520 parameters" in out


def test_info_fused_and_detailed(capsys):
    assert main(["info", str(CFG / "yolov10n.yaml"), "--imgsz", "256", "--fuse", "--detailed"]) == 0
    out = capsys.readouterr().out
    assert "model.0.conv.bias" in out  # fused convs carry a bias, listed per tensor


def test_list_shows_modules_sources_and_cfgs(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "C2fCIB" in out and "zoo" in out and "cfg/yolov10n.yaml" in out
    # every zoo block declares its spatial rule, so no shipped cfg needs a build-time trial run
    rows = [line.split() for line in out.splitlines() if len(line.split()) > 2 and line.split()[1] == "zoo"]
    assert rows and all(row[2] == "declared" for row in rows)


def test_scale_and_nc_overrides(capsys):
    assert main(["info", str(CFG / "yolov10.yaml"), "--scale", "s", "--nc", "3", "--imgsz", "128"]) == 0
    out = capsys.readouterr().out
    assert "(scale s)" in out and "[3, [" in out
