"""Configs that used to hang, blow up memory or crash: alias bombs and self-references (issue 14 item
3), undecodable files and non-finite scales (item 4), models too big to build (item 5). Each is one
ConfigError line naming the file and the fix, and exit code 2 from the CLI, found in well under a
second and without allocating the model."""
from __future__ import annotations

import resource
import time

import pytest
import torch
import yaml

from zoo import ConfigError, Model
from zoo.builder import DEFAULT_MAX_PARAMS, build_limits
from zoo.cli import main
from zoo.config import MAX_DEPTH

from zoo_test_paths import CFG

YOLO = CFG / "yolov10n.yaml"
HEAD = "nc: 3\nbackbone:\n"
# ten levels of ten: 10**8 values once expanded, a few hundred bytes of YAML
LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else '1'] * 10)}]\n" for i in range(9))


def _write(tmp_path, text: str | bytes, name: str = "bad.yaml"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _yolo_with(**changes) -> dict:
    cfg = yaml.safe_load(YOLO.read_text())
    cfg.update(changes)
    return cfg


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _refused_quickly(make, pattern: str, seconds: float = 3.0, mb: float = 300.0) -> None:
    """``make()`` raises a ConfigError matching ``pattern``: one line, fast, without a memory spike."""
    rss, start = _max_rss_mb(), time.perf_counter()
    with pytest.raises(ConfigError, match=pattern) as info:
        make()
    assert time.perf_counter() - start < seconds
    assert _max_rss_mb() - rss < mb
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ item 3: aliases
@pytest.mark.parametrize("where", [
    "  - [-1, 1, Conv, [16, 3, *l8]]\n",  # args
    "  - [*l8, 1, Conv, [16, 3]]\n",  # from
    "  - *l8\n",  # a whole row
], ids=["args", "from", "row"])
def test_alias_bombs_are_refused_fast(tmp_path, where):
    path = _write(tmp_path, LAUGHS + HEAD + where)
    _refused_quickly(lambda: Model(path), r"bad.yaml: 'l\d' expands to over 100,000 values .*alias bomb")


def test_alias_bomb_in_scales(tmp_path):
    path = _write(tmp_path, LAUGHS + HEAD + "  - [-1, 1, Conv, [16, 3]]\nscales:\n  n: [*l8, 0.25, 1024]\n")
    _refused_quickly(lambda: Model(path), "alias bomb")


def test_self_referencing_row(tmp_path):
    path = _write(tmp_path, HEAD + "  - &r [-1, 1, Conv, [64, 3, *r]]\n")
    _refused_quickly(lambda: Model(path), r"bad.yaml: 'backbone' contains itself through a YAML alias")


def test_deep_nesting_is_refused_before_libyaml_composes_it(tmp_path):
    # libyaml's composer recurses in C: ~50k levels crash the interpreter with a segfault
    path = _write(tmp_path, HEAD + "  - [-1, 1, Conv, [16, 3, " + "[" * 60_000 + "]" * 60_000 + "]]\n")
    # PyYAML >= 6.0.4 refuses such text itself (its own depth limit, ~1000) before our check sees level 65
    _refused_quickly(lambda: Model(path), f"nested more than {MAX_DEPTH} levels deep|exceeded maximum nesting depth")


def test_dict_configs_are_checked_before_they_are_copied():
    row = [-1, 1, "Conv", [64, 3]]
    row[3].append(row)  # what yaml gives for `&r [-1, 1, Conv, [64, 3, *r]]`
    _refused_quickly(lambda: Model({"backbone": [row]}), r"<dict>: 'backbone' contains itself")
    laughs = [1] * 10
    for _ in range(8):
        laughs = [laughs] * 10
    _refused_quickly(lambda: Model({"backbone": [[-1, 1, "Conv", [16, 3, laughs]]]}), "alias bomb")


def test_shared_values_within_the_bound_still_build(tmp_path):
    path = _write(tmp_path, "nc: 3\nk: &k [16, 3, 2]\nbackbone:\n  - [-1, 1, Conv, *k]\n  - [-1, 1, Conv, *k]\n")
    assert len(Model(path).records) == 2


# ------------------------------------------------------------------ item 4: file and scalar types
@pytest.mark.parametrize("data,pattern", [
    (HEAD.encode() + b"  - [-1, 1, Conv, [16, 3, 2]]\n# caf\xe9\n", r"not UTF-8 text \(byte 0xe9 at line 4\)"),
    (bytes(range(256)) * 4, r"not UTF-8 text \(byte 0x80 at line 2\)"),
], ids=["latin-1", "binary"])
def test_files_that_are_not_utf8_text(tmp_path, data, pattern):
    with pytest.raises(ConfigError, match="bad.yaml: " + pattern):
        Model(_write(tmp_path, data))


@pytest.mark.parametrize("changes,pattern", [
    ({"depth_multiple": "abc"}, r"'depth_multiple' must be a finite number > 0 .*got 'abc'"),
    ({"width_multiple": 0}, r"'width_multiple' must be a finite number > 0"),
    ({"max_channels": "lots"}, r"'max_channels' must be a positive integer channel count, got 'lots'"),
    ({"max_channels": 0.5}, r"'max_channels' must be a positive integer"),
    ({"depth_multiple": -0.5}, r"'depth_multiple' must be a finite number > 0 .*got -0.5"),
])
def test_bad_top_level_multiples(tmp_path, changes, pattern):
    cfg = _yolo_with(**changes)
    del cfg["scales"]
    with pytest.raises(ConfigError, match="bad.yaml: " + pattern):
        Model(_write(tmp_path, yaml.safe_dump(cfg)))


@pytest.mark.parametrize("scale,pattern", [
    ("[.nan, 0.25, 1024]", "depth must be a finite number > 0 .*got nan"),
    ("[0.33, .inf, 1024]", "width must be a finite number > 0 .*got inf"),
    ("[-0.33, 0.25, 1024]", "depth must be a finite number > 0 .*got -0.33"),
    ("[0.33, 0.25, .inf]", "max_channels must be a positive integer channel count, got inf"),
    ("[0.33, 0.25, true]", "max_channels must be a positive integer channel count, got True"),
])
def test_bad_scale_values(tmp_path, scale, pattern):
    text = YOLO.read_text().replace("n: [0.33, 0.25, 1024]", f"n: {scale}")
    assert scale in text
    with pytest.raises(ConfigError, match=r"yolov10n.yaml: scale 'n' \[depth, width, max_channels\]: " + pattern):
        Model(_write(tmp_path, text, "yolov10n.yaml"))


def test_whole_number_floats_are_still_accepted(tmp_path):
    text = YOLO.read_text().replace("n: [0.33, 0.25, 1024]", "n: [0.33, 0.25, 1024.0]")
    assert sum(p.numel() for p in Model(_write(tmp_path, text, "yolov10n.yaml")).parameters()) == 2_775_520


# ------------------------------------------------------------------ item 5: size limits
def _deep_conv() -> dict:
    cfg = _yolo_with()
    cfg["backbone"][0] = [-1, 1_000_000_000, "Conv", [128, 3, 2]]
    return cfg


def test_a_billion_stacked_repeats_are_refused_before_building_them():
    _refused_quickly(lambda: Model(_deep_conv()), r"row 0 \(backbone\): Conv x330,000,000 would have about "
                                                  r"306,240,000,000 parameters .*--max-params")


def test_a_block_stacking_its_own_repeats_is_sized_before_it_is_built():
    _refused_quickly(lambda: Model(_yolo_with(scales={"n": [1e9, 0.25, 1024]})), r"row 2 \(backbone\): C2f x3,000,000,000")


def test_param_free_repeats_are_bounded_by_a_module_count():
    cfg = _yolo_with()
    cfg["backbone"][0] = [-1, 100_000_000, "nn.ReLU", []]
    _refused_quickly(lambda: Model(cfg), r"nn.ReLU x33,000,000 would create about 33,000,000 modules")


@pytest.mark.parametrize("width,pattern", [
    (40, r"row 4 \(backbone\): C2f: with this row the model would have over 1,088,074,241 parameters, "
         r"over the limit of 1,000,000,000"),
    (1e6, r"row 0 \(backbone\): Conv: its output at 640x640 would hold 6,553,600,000,000 values"),
    (1e300, r"row 0 \(backbone\): Conv: its output at 640x640 would hold 1e307 values"),
], ids=["x40", "x1e6", "x1e300"])
def test_wide_models_are_refused(width, pattern):
    # width x40 passes 1/8 of the limit at row 4, then is sized whole on the meta device
    _refused_quickly(lambda: Model(_yolo_with(scales={"n": [0.33, width, 10**12]})), pattern, mb=800)


def test_nc_of_a_billion_is_refused_without_allocating():
    _refused_quickly(lambda: Model(YOLO, nc=10**9), r"row 23 \(head\): v10Detect: with this row the model would "
                                                    r"have over 100,002,247,713 parameters", seconds=2)


def test_the_limit_can_be_raised_and_lowered():
    assert DEFAULT_MAX_PARAMS == 10**9
    with pytest.raises(ConfigError, match="over the limit of 1,000,000; .*--max-params N"):
        Model(YOLO, max_params=10**6)
    with build_limits(max_params=10**6):
        with pytest.raises(ConfigError, match="over the limit of 1,000,000"):
            Model(YOLO)
        assert len(Model(YOLO, max_params=3 * 10**6).records) == 24  # the keyword wins over the scope
    with pytest.raises(ConfigError, match="max_params must be a positive integer"):
        Model(YOLO, max_params=0)


def test_sizing_a_big_model_first_builds_the_same_weights():
    """Past 1/8 of the limit the model is sized on the meta device and rebuilt: same RNG stream."""
    torch.manual_seed(0)
    plain = Model(YOLO).state_dict()
    torch.manual_seed(0)
    detoured = Model(YOLO, max_params=3 * 10**6).state_dict()
    assert plain.keys() == detoured.keys() and all(torch.equal(plain[k], detoured[k]) for k in plain)


# ------------------------------------------------------------------ the CLI: one line, exit code 2
@pytest.mark.parametrize("text,extra,message", [
    (HEAD + "  - &r [-1, 1, Conv, [64, 3, *r]]\n", [], "bad.yaml: 'backbone' contains itself through a YAML alias"),
    (LAUGHS + HEAD + "  - [-1, 1, Conv, [16, 3, *l8]]\n", [], "expands to over 100,000 values"),
    (HEAD.encode() + b"  - [-1, 1, Conv, [16]]\n# caf\xe9\n", [], "bad.yaml: not UTF-8 text"),
    (YOLO.read_text().replace("[0.33, 0.25, 1024]", "[.nan, 0.25, 1024]"), [], "depth must be a finite number"),
    (yaml.safe_dump(_deep_conv()), [], "row 0 (backbone): Conv x330,000,000 would have about"),
    (YOLO.read_text().replace("[0.33, 0.25, 1024]", "[0.33, 1000000.0, 1024]"), [], "would hold 6,553,600,000,000 values"),
    (YOLO.read_text(), ["--max-params", "1e6"], "over the limit of 1,000,000; make it smaller"),
    (YOLO.read_text(), ["--nc", "1000000000"], "row 23 (head): v10Detect: with this row the model would have over"),
], ids=["self-reference", "alias-bomb", "latin-1", "nan-depth", "deep-row", "width-1e6", "max-params", "nc-1e9"])
def test_cli_one_line_exit_2(tmp_path, monkeypatch, capsys, text, extra, message):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, text)
    assert main(["info", "bad.yaml", *extra]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("zoo info: error: bad.yaml: ") and message in err, err


def test_cli_max_params_raises_the_limit(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["info", str(YOLO), "--imgsz", "64", "--max-params", "3_000_000"]) == 0
    assert "2,775,520 parameters" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["info", str(YOLO), "--max-params", "lots"])
    assert exc.value.code == 2
