"""Checkpoint reading: zoo, plain state dict, Ultralytics pickles without Ultralytics, refusal of code."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from zoo import CheckpointError, Model
from zoo.checkpoint import read_checkpoint

from zoo_test_paths import CFG, fixture_dir


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_calls_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Exploit(str(marker)), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load: the checkpoint asks to call posix.system|os.system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_zoo_checkpoint_round_trip_rebuilds_the_model(tmp_path):
    model = Model(CFG / "yolov10n.yaml", nc=5)
    path = tmp_path / "last.pt"
    torch.save({"model_state": model.state_dict(), "yaml": model.yaml, "epoch": 1}, path)
    again = Model.from_checkpoint(path)
    assert again.nc == 5 and again.scale == "n"
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_plain_state_dict_and_report(tmp_path, capsys):
    model = Model(CFG / "yolov10n.yaml", nc=5)
    state = model.state_dict()
    state["model.23.extra"] = torch.zeros(1)
    state["model.0.conv.weight"] = torch.zeros(1, 2, 3)
    del state["model.1.bn.bias"]
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    report = Model(CFG / "yolov10n.yaml", nc=5).load(path)
    assert report.unexpected == ["model.23.extra"]
    assert report.missing == ["model.1.bn.bias"]
    assert [k for k, _, _ in report.mismatched] == ["model.0.conv.weight"]
    out = capsys.readouterr().out
    assert "missing 1, unexpected 1, shape-mismatched 1" in out
    with pytest.raises(CheckpointError, match="strict load failed"):
        Model(CFG / "yolov10n.yaml", nc=5).load(path, strict=True)


def test_ultralytics_checkpoint_loads_without_ultralytics():
    path = fixture_dir("yolov10n") / "ultralytics_ckpt.pt"
    assert "ultralytics" not in sys.modules
    ckpt = read_checkpoint(path)
    assert ckpt.kind == "ultralytics" and ckpt.config["backbone"][0] == [-1, 1, "Conv", [64, 3, 2]]
    report = Model(CFG / "yolov10n.yaml").load(path, strict=True)
    assert len(report.loaded) == 595 and report.ok
    assert "ultralytics" not in sys.modules
    rebuilt = Model.from_checkpoint(path)  # from the config pickled inside
    assert sum(p.numel() for p in rebuilt.parameters()) == 2_775_520


def test_missing_and_garbage_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(junk)
