"""``zoo export``: the file and its one-line report; bad input as one line and exit code 2 (unknown
format, a size off the stride, a missing optional package, a user block with an op ONNX lacks)."""
from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest
import torch

from zoo import ConfigError, Model
from zoo.cli import main
from zoo.export import MissingDependency, OnnxModel
from zoo.export.onnx import read_onnx_metadata

from export_helpers import require_runtime
from tiny_cfgs import TINY_DETECT


@pytest.fixture(autouse=True)
def _outside_the_repo(tmp_path, monkeypatch):
    """Run every command from a folder outside the repo, as a user of the installed package would."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny_cfg(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_DETECT)
    return path


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo export: error: ") and "\n" not in err, err
    return err


def test_exports_beside_the_checkpoint_and_reports_in_one_line(tiny_cfg, tmp_path, capsys) -> None:
    require_runtime()
    torch.manual_seed(0)
    ckpt = Model(tiny_cfg).save(tmp_path / "runs" / "best.pt")
    assert main(["export", str(ckpt), "--imgsz", "64", "96", "--dynamic"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    target = tmp_path / "runs" / "best.onnx"
    assert len(out) == 1 and out[0].startswith(f"exported {target} (") and " MB, onnx, detect) in " in out[0]
    meta = read_onnx_metadata(target)
    assert meta.imgsz == (64, 96) and meta.dynamic and meta.model == "tiny" and meta.task == "detect"
    assert OnnxModel(target)(torch.rand(2, 3, 128, 64).numpy()).shape[::2] == (2, 6)


def test_a_cfg_exports_to_the_current_folder_in_both_formats(tiny_cfg, tmp_path, capsys) -> None:
    require_runtime()
    assert main(["export", str(tiny_cfg), "--imgsz", "64", "--simplify", "--opset", "18"]) == 0
    assert read_onnx_metadata(tmp_path / "tiny.onnx").opset == 18
    assert main(["export", str(tiny_cfg), "--imgsz", "64", "--format", "torchscript"]) == 0
    assert (tmp_path / "tiny.torchscript").is_file()
    capsys.readouterr()


@pytest.mark.parametrize("argv, expected", [
    (["--format", "tflite"], "--format 'tflite' is not an export format; use one of onnx, torchscript"),
    (["--imgsz", "330"], "--imgsz 330 is not a multiple of the model's stride 32; use 320 or 352"),
    (["--imgsz", "20"], "--imgsz 20 is not a multiple of the model's stride 32; use 32"),
    (["--imgsz", "64", "64", "64"], "--imgsz takes N or H W, got 64 64 64"),
    (["--opset", "9"], "--opset 9 is outside what the exporter writes"),
    (["--format", "torchscript", "--simplify"], "--simplify applies to ONNX only"),
])
def test_bad_input_is_one_line_and_exit_code_2(tiny_cfg, argv, expected, capsys) -> None:
    assert main(["export", str(tiny_cfg), *argv]) == 2
    assert expected in _one_line_error(capsys)


@pytest.mark.parametrize("missing, argv", [("onnx", []), ("onnxscript", ["--simplify"])])
def test_a_missing_optional_package_names_the_install_command(tiny_cfg, monkeypatch, capsys, missing, argv) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    assert main(["export", str(tiny_cfg), "--imgsz", "64", *argv]) == 2
    err = _one_line_error(capsys)
    assert f"'{missing}' package, which is not installed" in err and 'pip install -e ".[export]"' in err


def test_the_runtime_without_onnxruntime_says_how_to_get_it(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(MissingDependency, match=r"running an ONNX model needs the 'onnxruntime' package.*zoo\[export\]"):
        OnnxModel("model.onnx")


SPECTRAL_PLUGIN = textwrap.dedent('''
    import torch
    import torch.nn as nn
    from zoo import register
    from zoo.wiring import in_out, same_size

    @register(wiring=in_out(spatial=same_size()))
    class ExportTestSpectralGate(nn.Module):
        """A global filter in the frequency domain (rfft2 -> halve -> irfft2), then a 1x1 conv."""
        def __init__(self, c1, c2):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, 1)
        def forward(self, x):
            return self.conv(torch.fft.irfft2(torch.fft.rfft2(x) * 0.5, s=x.shape[-2:]))
''')

SPECTRAL_NET = """\
nc: 4
plugins: [spectral_gate_plugin.py]
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, ExportTestSpectralGate, [16]]
  - [-1, 1, Conv, [32, 3, 2]]
head:
  - [-1, 1, ClassifierHead, [nc]]
"""


def test_a_block_onnx_cannot_express_is_named_with_its_row_and_op(tmp_path, capsys) -> None:
    require_runtime()
    (tmp_path / "spectral_gate_plugin.py").write_text(SPECTRAL_PLUGIN)
    cfg = tmp_path / "spectral.yaml"
    cfg.write_text(SPECTRAL_NET)
    assert main(["export", str(cfg), "--imgsz", "64"]) == 2
    err = _one_line_error(capsys)
    assert "row 1 (backbone): ExportTestSpectralGate cannot be exported" in err and "aten::fft_rfft2" in err
    assert not (tmp_path / "spectral.onnx").exists()
    with pytest.raises(ConfigError) as raised:
        Model(cfg).export(imgsz=64)
    assert raised.value.row == 1
    # TorchScript has the op: the same model exports there
    assert main(["export", str(cfg), "--imgsz", "64", "--format", "torchscript"]) == 0
