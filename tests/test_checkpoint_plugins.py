"""A checkpoint is data: plugins its config names are never imported unless the user allows them."""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_cfgs import TINY_CLASSIFY
from zoo.cli import main
from zoo.errors import CheckpointError
from zoo.model import Model

TINY = TINY_CLASSIFY.replace("nc: 5", "nc: 3")


def _evil_plugin(folder: Path, marker: Path, name: str = "evil.py") -> Path:
    """A plugin that leaves a marker when imported and registers a uniquely named block."""
    block = f"Evil{uuid.uuid4().hex[:8]}"
    path = folder / name
    path.write_text(
        "import torch.nn as nn\n"
        "from zoo import register\n"
        f"open({str(marker)!r}, 'w').write('imported')\n"
        f"@register\nclass {block}(nn.Identity):\n    pass\n")
    return path


def _checkpoint_naming(tmp_path: Path, plugins: list[str], saved_plugins: list[str] = ()) -> Path:
    model = Model(_tiny_cfg(tmp_path))
    yaml = dict(model.yaml) | {"plugins": plugins}
    path = tmp_path / "ckpt" / "weights" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model_state": model.state_dict(), "yaml": yaml, "plugins": list(saved_plugins),
                "names": ["a", "b", "c"]}, path)
    return path


def _tiny_cfg(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("where", ["yaml", "saved"])
def test_from_checkpoint_refuses_named_plugins(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "marker"
    evil = _evil_plugin(tmp_path, marker)
    named = [str(evil)]
    ckpt = _checkpoint_naming(tmp_path, named if where == "yaml" else [], named if where == "saved" else [])
    with pytest.raises(CheckpointError, match=r"names plugin\(s\) .*evil.py.*--plugin.*--trust-plugins"):
        Model.from_checkpoint(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("spec", ["evil.py", "some_module_name", "sub/evil.py"])
def test_cwd_relative_and_module_plugins_are_refused_too(tmp_path: Path, spec: str, monkeypatch) -> None:
    marker = tmp_path / "marker"
    (tmp_path / "sub").mkdir()
    _evil_plugin(tmp_path, marker)
    _evil_plugin(tmp_path / "sub", marker)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "some_module_name.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    ckpt = _checkpoint_naming(tmp_path, [spec])
    with pytest.raises(CheckpointError, match="never imports code"):
        Model.from_checkpoint(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["predict", "val", "info"])
def test_cli_refuses_in_one_line_and_imports_nothing(tmp_path: Path, image: Path, command: str, capsys,
                                                      monkeypatch) -> None:
    marker = tmp_path / "marker"
    evil = _evil_plugin(tmp_path, marker)
    ckpt = _checkpoint_naming(tmp_path, [str(evil)])
    monkeypatch.chdir(tmp_path)
    argv = {"predict": ["predict", str(ckpt), "--source", str(image), "--device", "cpu"],
            "val": ["val", str(ckpt), "--data", "shapes:n_train=4,n_val=2", "--imgsz", "32", "--workers", "0"],
            "info": ["info", str(ckpt), "--imgsz", "32"]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evil.py" in err[0] and "--trust-plugins" in err[0]
    assert not marker.exists()


def test_user_given_plugin_or_trust_flag_allows_it(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "marker"
    (tmp_path / "elsewhere").mkdir()
    evil = _evil_plugin(tmp_path / "elsewhere", marker)
    ckpt = _checkpoint_naming(tmp_path, ["evil.py"])  # stored as a bare name, as a run folder records it
    # the user names the file themselves (by its own path): matched by file name
    model = Model.from_checkpoint(ckpt, plugins=(str(evil),))
    assert marker.exists() and model.yaml["plugins"] == [str(evil)]
    marker.unlink()
    # --trust-plugins: the named file is looked up beside the checkpoint and in its run folder
    run_copy = _evil_plugin(ckpt.parent.parent, tmp_path / "marker2")
    assert main(["info", str(ckpt), "--imgsz", "32", "--trust-plugins"]) == 0
    assert (tmp_path / "marker2").exists() and run_copy.is_file()


def test_resume_never_imports_what_the_checkpoint_names(tmp_path: Path, capsys, monkeypatch) -> None:
    marker = tmp_path / "marker"
    evil = _evil_plugin(tmp_path, marker)
    monkeypatch.chdir(tmp_path)
    common = ["--data", "shapes:n_train=4,n_val=2", "--imgsz", "32", "--batch", "2", "--workers", "0",
              "--device", "cpu", "--no-plots", "--no-progress", "--project", str(tmp_path / "runs")]
    assert main(["train", str(_tiny_cfg(tmp_path)), "--epochs", "2", "--no-val", *common]) == 0
    last = tmp_path / "runs" / "train" / "weights" / "last.pt"
    ck = torch.load(last, weights_only=True)
    ck["yaml"]["plugins"] = [str(evil)]
    ck["args"]["plugin"] = [str(evil)]
    ck["args"]["cfg"] = str(tmp_path / "elsewhere.yaml")  # a cfg path from the file is not read either
    (tmp_path / "elsewhere.yaml").write_text(TINY + f"plugins: [{evil}]\n")
    ck["epoch"] = 0
    torch.save(ck, last)
    capsys.readouterr()
    assert main(["train", "--resume", str(last)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evil.py" in err[0]
    assert not marker.exists()


# --------------------------------------------------------------------------- weights that do not fit
WIDER = TINY.replace("[8, 3, 2]", "[12, 3, 2]").replace("[16, 3, 2]", "[24, 3, 2]")


def _mismatched_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint whose tensors come from a wider model than the config it carries (5 classes, as
    the shapes data has, so the class count is not what stops it)."""
    cfg = tmp_path / "tiny5.yaml"
    cfg.write_text(TINY.replace("nc: 3", "nc: 5"))
    wider = tmp_path / "wider.yaml"
    wider.write_text(WIDER.replace("nc: 3", "nc: 5"))
    path = tmp_path / "mismatch.pt"
    torch.save({"model_state": Model(wider).state_dict(), "yaml": dict(Model(cfg).yaml)}, path)
    return path


@pytest.mark.parametrize("command", ["predict", "val"])
def test_checkpoint_that_does_not_fit_its_config_is_refused(tmp_path: Path, image: Path, command: str,
                                                             capsys) -> None:
    ckpt = _mismatched_checkpoint(tmp_path)
    argv = {"predict": ["predict", str(ckpt), "--source", str(image), "--device", "cpu", "--out", str(tmp_path / "o")],
            "val": ["val", str(ckpt), "--data", "shapes:n_train=4,n_val=2", "--imgsz", "32", "--workers", "0"]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not fit the model" in err[0] and "shape-mismatched" in err[0]
    n_model = len(Model(_tiny_cfg(tmp_path)).state_dict())
    assert f"of {n_model} tensors" in err[0]


def test_val_refuses_a_checkpoint_with_other_classes_than_the_data(tmp_path: Path, capsys) -> None:
    model = Model(_tiny_cfg(tmp_path))  # 3 classes; the shapes data has 5
    path = tmp_path / "three.pt"
    torch.save({"model_state": model.state_dict(), "yaml": dict(model.yaml)}, path)
    assert main(["val", str(path), "--data", "shapes:n_train=4,n_val=2", "--imgsz", "32", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "predicts 3 classes but the data has 5" in err[0]


def test_val_and_predict_weights_must_fit(tmp_path: Path, image: Path, capsys) -> None:
    wider = tmp_path / "wider.yaml"
    wider.write_text(WIDER)
    weights = tmp_path / "w.pt"
    torch.save(Model(wider).state_dict(), weights)
    cfg = _tiny_cfg(tmp_path)
    assert main(["val", str(cfg), "--weights", str(weights), "--data", "shapes:n_train=4,n_val=2", "--imgsz", "32",
                 "--workers", "0"]) == 2
    assert "do not fit the model" in capsys.readouterr().err
    assert main(["predict", str(cfg), "--weights", str(weights), "--source", str(image), "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 2
    assert "do not fit the model" in capsys.readouterr().err


def test_nan_weights_are_refused_with_the_count(tmp_path: Path, capsys) -> None:
    cfg = _tiny_cfg(tmp_path)
    model = Model(cfg)
    state = model.state_dict()
    state["model.0.conv.weight"][0, 0, 0, 0] = float("nan")
    state["model.1.bn.running_var"][:] = float("inf")
    path = tmp_path / "nan.pt"
    torch.save({"model_state": state, "yaml": dict(model.yaml)}, path)
    with pytest.raises(CheckpointError, match=r"2 of \d+ tensors hold NaN or inf"):
        Model.from_checkpoint(path)
    with pytest.raises(CheckpointError, match="NaN or inf"):
        Model(cfg).load(path)
    assert main(["train", str(cfg), "--weights", str(path), "--epochs", "1", "--imgsz", "32", "--workers", "0",
                 "--data", "shapes:n_train=4,n_val=2", "--project", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN or inf" in err[0]


def test_run_folder_keeps_its_plugins_for_use_from_anywhere(tmp_path: Path, capsys, monkeypatch) -> None:
    """A run copies its plugin files into RUN/plugins; its checkpoint then works from any folder with
    --trust-plugins (or --plugin, which always wins), and never without the user's say-so."""
    project = tmp_path / "project"
    project.mkdir()
    block = f"Block{uuid.uuid4().hex[:8]}"
    (project / "myblocks.py").write_text(
        "import torch.nn as nn\nfrom zoo import register\nfrom zoo.wiring import in_out, same_size\n"
        f"@register(wiring=in_out(spatial=same_size()))\nclass {block}(nn.Conv2d):\n"
        "    def __init__(self, c1, c2):\n        super().__init__(c1, c2, 1)\n")
    (project / "net.yaml").write_text(TINY.replace("head:", f"  - [-1, 1, {block}, [16]]\nhead:")
                                      + "plugins: [myblocks.py]\n")
    monkeypatch.chdir(project)
    assert main(["train", "net.yaml", "--epochs", "1", "--imgsz", "32", "--batch", "2", "--workers", "0",
                 "--data", "shapes:n_train=4,n_val=2", "--device", "cpu", "--no-plots", "--no-progress",
                 "--project", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "train"
    assert (run / "plugins" / "myblocks.py").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["info", str(run / "weights" / "last.pt"), "--imgsz", "32"]) == 2
    assert "myblocks.py" in capsys.readouterr().err
    assert main(["info", str(run / "weights" / "last.pt"), "--imgsz", "32", "--trust-plugins"]) == 0
    assert main(["info", str(run / "weights" / "last.pt"), "--imgsz", "32", "--plugin",
                 str(project / "myblocks.py")]) == 0
