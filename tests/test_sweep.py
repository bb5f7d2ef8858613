"""zoo sweep: --set paths, variant expansion, duplicate detection, CSV contents and resume."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from zoo.cli import main
from zoo.errors import ConfigError
from zoo.variants import apply_override, expand_variants, parse_set

TINY = """\
nc: 4
imgsz: 32
scales:
  n: [1.0, 0.5, 64]
  s: [1.0, 1.0, 64]
  same_as_n: [1.0, 0.5, 64]
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, C2f, [32, True]]
head:
  - [-1, 1, ClassifierHead, [nc]]
"""

FAST = ["--runs", "2", "--warmup", "0", "--no-progress"]


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_parse_set_values_are_yaml_and_brackets_stay_whole() -> None:
    o = parse_set("head.0.args.0=3,5")
    assert o.key == "head.0.args.0" and o.values == (3, 5)
    assert parse_set("x=0.5,True,nearest").values == (0.5, True, "nearest")
    assert parse_set("backbone.0.from=[-1, 2],-1").values == ([-1, 2], -1)
    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        parse_set("nc")
    with pytest.raises(ConfigError, match="empty value"):
        parse_set("nc=3,,5")


def test_apply_override_paths(tiny: Path) -> None:
    import yaml

    cfg = yaml.safe_load(tiny.read_text())
    apply_override(cfg, "backbone.1.args.0", 48)
    apply_override(cfg, "head.0.repeats", 2)
    apply_override(cfg, "row.2.args.1", False)  # row 2 counted over backbone + head
    apply_override(cfg, "scales.s.1", 0.75)
    apply_override(cfg, "nc", 7)
    assert cfg["backbone"][1][3][0] == 48
    assert cfg["head"][0][1] == 2
    assert cfg["backbone"][2][3][1] is False
    assert cfg["scales"]["s"] == [1.0, 0.75, 64]
    assert cfg["nc"] == 7


@pytest.mark.parametrize("key, message", [
    ("backbone.9.args.0", "index 9 is out of range"),
    ("backbone.0.argz.0", "unknown row field 'argz'"),
    ("backbone.0.args.7", "index 7 is out of range"),
    ("backbone.0.args.0.1", "not a list"),
    ("width", "no top-level 'width'"),
    ("scales.q.0", "no scale 'q'"),
    ("foo.bar", "unknown path"),
])
def test_bad_paths_name_the_key(tiny: Path, key: str, message: str) -> None:
    import yaml

    cfg = yaml.safe_load(tiny.read_text())
    with pytest.raises(ConfigError, match=message) as info:
        apply_override(cfg, key, 1, str(tiny))
    assert key in str(info.value)


def test_expand_is_the_product(tiny: Path) -> None:
    variants = expand_variants(tiny, ["n", "s"], [parse_set("nc=3,5"), parse_set("backbone.2.repeats=1,2")])
    assert [v.name for v in variants] == [
        "n nc=3 backbone.2.repeats=1", "n nc=3 backbone.2.repeats=2", "n nc=5 backbone.2.repeats=1",
        "n nc=5 backbone.2.repeats=2", "s nc=3 backbone.2.repeats=1", "s nc=3 backbone.2.repeats=2",
        "s nc=5 backbone.2.repeats=1", "s nc=5 backbone.2.repeats=2"]
    assert variants[3].cfg["nc"] == 5 and variants[3].cfg["backbone"][2][1] == 2
    assert variants[0].cfg["nc"] == 3  # every variant owns its copy


def test_sweep_writes_csv_png_and_table(tiny: Path, tmp_path: Path, capsys) -> None:
    argv = ["sweep", str(tiny), "--scales", "n,s", "--set", "nc=3,5", "--project", str(tmp_path / "runs"),
            "--name", "t", *FAST]
    assert main(argv) == 0
    out_dir = tmp_path / "runs" / "t"
    rows = _rows(out_dir / "sweep.csv")
    assert [r["variant"] for r in rows] == ["n nc=3", "n nc=5", "s nc=3", "s nc=5"]
    params = {r["variant"]: int(r["params"]) for r in rows}
    assert params["s nc=3"] > params["n nc=3"]
    # ClassifierHead's Linear has (c_in + 1) params per class: 2 more classes add 2 * (c_in + 1)
    assert params["n nc=5"] - params["n nc=3"] == 2 * (16 + 1)
    assert params["s nc=5"] - params["s nc=3"] == 2 * (32 + 1)
    for r in rows:
        assert r["imgsz"] == "32" and r["batch"] == "1" and r["device"] == "cpu"
        assert float(r["gflops"]) > 0 and float(r["latency_ms"]) > 0 and float(r["images_per_s"]) > 0
        assert r["duplicate_of"] == "" and r["metric"] == ""
    assert (out_dir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "| variant |" in table and "| s nc=5 |" in table
    # the same name again is numbered, not overwritten
    assert main(["sweep", str(tiny), "--scales", "n", "--project", str(tmp_path / "runs"), "--name", "t", *FAST]) == 0
    assert (tmp_path / "runs" / "t2" / "sweep.csv").exists()


def test_imgsz_set_changes_flops_not_params(tiny: Path, tmp_path: Path) -> None:
    assert main(["sweep", str(tiny), "--scales", "n", "--set", "imgsz=32,64", "--project", str(tmp_path), *FAST]) == 0
    a, b = _rows(tmp_path / "tiny" / "sweep.csv")
    assert (a["imgsz"], b["imgsz"]) == ("32", "64")
    assert a["params"] == b["params"]
    assert float(b["gflops"]) == pytest.approx(4 * float(a["gflops"]), rel=0.05)
    assert a["duplicate_of"] == b["duplicate_of"] == ""  # same weights at another size is a different variant


def test_identical_variants_are_reported_not_repeated(tiny: Path, tmp_path: Path, capsys) -> None:
    assert main(["sweep", str(tiny), "--scales", "n,same_as_n,s", "--project", str(tmp_path), *FAST]) == 0
    rows = {r["variant"]: r for r in _rows(tmp_path / "tiny" / "sweep.csv")}
    assert rows["same_as_n"]["duplicate_of"] == "n"
    assert rows["same_as_n"]["params"] == rows["n"]["params"]
    assert rows["s"]["duplicate_of"] == ""
    out = capsys.readouterr().out
    assert "'same_as_n' builds the same model as 'n'" in out
    assert "same_as_n = n" in out


def test_resume_skips_variants_in_the_csv(tiny: Path, tmp_path: Path) -> None:
    argv = ["sweep", str(tiny), "--scales", "n", "--set", "head.0.args.0=3,5,7", "--project", str(tmp_path),
            "--name", "r", "--exist-ok", *FAST]
    assert main(argv) == 0
    path = tmp_path / "r" / "sweep.csv"
    full = _rows(path)
    # simulate an interrupt after two variants; mark them so a re-measure would show
    partial = full[:2]
    for r in partial:
        r["latency_ms"] = "12345"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(full[0]))
        writer.writeheader()
        writer.writerows(partial)
    assert main(argv) == 0
    rows = _rows(path)
    assert [r["variant"] for r in rows] == [r["variant"] for r in full]
    assert [r["latency_ms"] for r in rows[:2]] == ["12345", "12345"]
    assert all(r["latency_ms"] != "12345" for r in rows[2:])
    assert [r["params"] for r in rows] == [r["params"] for r in full]


def test_resume_refuses_other_measuring_settings(tiny: Path, tmp_path: Path, capsys) -> None:
    base = ["sweep", str(tiny), "--scales", "n", "--project", str(tmp_path), "--name", "r", "--exist-ok", *FAST]
    assert main(base) == 0
    assert main(base + ["--batch", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "batch" in err and "--name" in err


def test_bad_set_is_one_line_exit_2(tiny: Path, tmp_path: Path, capsys) -> None:
    rc = main(["sweep", str(tiny), "--set", "backbone.1.args.9=3", "--project", str(tmp_path), *FAST])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "backbone.1.args.9" in err and "0..2" in err
    assert main(["sweep", str(tiny), "--scales", "n,xl", "--project", str(tmp_path), *FAST]) == 2
    assert "bad scale 'xl'" in capsys.readouterr().err
    assert main(["sweep", str(tiny), "--set", "nc=3", "--set", "nc=5", "--project", str(tmp_path), *FAST]) == 2
    assert "same key twice" in capsys.readouterr().err
    # a value that breaks the model is reported by the builder with file and row
    assert main(["sweep", str(tiny), "--set", "backbone.0.args.1=abc", "--project", str(tmp_path), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "row 0" in err


def test_train_records_metric_and_time(tiny: Path, tmp_path: Path) -> None:
    argv = ["sweep", str(tiny), "--scales", "n", "--set", "nc=3,5", "--project", str(tmp_path), "--train",
            "--epochs", "1", "--data", "shapes:n_train=8,n_val=4,max_objects=2", "--train-batch", "4",
            "--train-args=--no-ema", *FAST]
    assert main(argv) == 0
    rows = _rows(tmp_path / "tiny" / "sweep.csv")
    assert len(rows) == 2
    for r in rows:
        assert r["metric_name"] == "top1"
        assert 0.0 <= float(r["metric"]) <= 1.0
        assert float(r["train_time_s"]) > 0
        assert (Path(r["train_dir"]) / "weights" / "last.pt").exists()
        # shapes has its own class count: the trainer rebuilds the head to match it, so the
        # measured params are the swept model's and the trained run records its own
        assert r["params"]
    assert (tmp_path / "tiny" / "variants").is_dir()
