"""Shipped cfgs by name from any folder (``zoo info yolov10n``, ``Model("yolov10n")``, ``zoo.list_models``),
and a ``zoo --help`` that does not load torch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo.cli import main
from zoo.config import CFG_DIR, find_cfg, list_models, resolve_spec
from zoo.errors import ConfigError

from zoo_test_paths import CFG


@pytest.fixture(autouse=True)
def _outside_the_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_cfgs_ship_inside_the_package():
    assert CFG_DIR == Path(zoo.__file__).resolve().parent / "cfg"
    assert (CFG_DIR / "yolov10n.yaml").is_file()
    assert sorted(p.name for p in CFG.glob("*.yaml")) == sorted(p.name for p in CFG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", ["yolov10n", "yolov10n.yaml", "cfg/yolov10n.yaml", "sam-tinyvit", "rtdetr-l.yaml"])
def test_bare_names_resolve_from_any_folder(name):
    stem = Path(name).name.removesuffix(".yaml")
    assert find_cfg(name) == CFG_DIR / f"{stem}.yaml"
    spec = resolve_spec(name)
    assert spec.name == stem and Path(spec.source) == CFG_DIR / f"{stem}.yaml"


def test_scale_still_follows_the_file_name():
    assert resolve_spec("yolov10n").scale == "n"
    assert resolve_spec("yolov10s.yaml").scale == "s"
    assert resolve_spec("rtdetr-l").scale == "l"


def test_a_path_wins_over_a_shipped_name(tmp_path):
    local = tmp_path / "yolov10n.yaml"
    local.write_text((CFG_DIR / "yolov10n.yaml").read_text().replace("nc: 80", "nc: 3"))
    assert "nc: 3" in local.read_text()
    spec = resolve_spec("yolov10n.yaml")  # the file in the working folder, not the shipped one
    assert spec.nc == 3 and Path(spec.source) == Path("yolov10n.yaml") and spec.scale == "n"
    assert resolve_spec("yolov10n").nc == 80  # no such file: the shipped cfg


def test_a_missing_path_elsewhere_is_not_replaced_by_a_shipped_cfg():
    with pytest.raises(ConfigError, match="file not found"):
        resolve_spec("some/folder/yolov10n.yaml")


def test_a_typo_suggests_close_names():
    with pytest.raises(ConfigError) as info:
        resolve_spec("yolov10m2")
    text = str(info.value)
    assert "unknown model 'yolov10m2'" in text and "did you mean 'yolov10m'" in text and "zoo list" in text
    assert "\n" not in text


def test_model_by_name():
    model = zoo.Model("yolov10n")
    assert model.name == "yolov10n" and model.scale == "n"


def test_info_by_name_and_typo_from_another_folder(capsys):
    assert main(["info", "yolov10n", "--imgsz", "64"]) == 0
    assert "yolov10n (scale n) summary" in capsys.readouterr().out
    assert main(["info", "cfg/yolov10n.yaml", "--imgsz", "64"]) == 0
    assert main(["info", "yolov10m2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'yolov10m'" in err


def test_list_prints_usable_names(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.split("shipped cfgs")[1].splitlines()[1:]
    names = [line.split()[0] for line in lines if line.strip()]
    assert names == list_models() and "yolov10n" in names and "sam-tinyvit" in names
    assert all(Path(line.split()[1]).is_file() for line in lines if line.strip())


def test_list_models():
    names = zoo.list_models()
    assert names == sorted(names) and {"yolov10n", "rtdetr-l", "sam-tinyvit", "tinyvit-5m-cls"} <= set(names)
    assert zoo.list_models("yolov10*") == [n for n in names if n.startswith("yolov10")]
    assert zoo.list_models("*-cls") and all(n.endswith("-cls") for n in zoo.list_models("*-cls"))
    assert zoo.list_models("nothing*") == []
    assert "list_models" in zoo.__all__


@pytest.mark.parametrize("argv", [["--help"], ["info", "--help"], ["list", "--help"], ["val", "--help"],
                                  ["predict", "--help"], ["sweep", "--help"], ["benchmark", "--help"],
                                  ["train", "--help"], ["export", "--help"]])
def test_help_does_not_import_torch(argv):
    code = ("import sys\nfrom zoo.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("NO-TORCH"), out.stdout[-300:]
    assert "usage: zoo" in out.stdout
