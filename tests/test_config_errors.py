"""Broken configs: one line naming file, row and fix; exit code 2 from the CLI; fuzzing."""
from __future__ import annotations

import copy
import resource

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo import ConfigError, Model
from zoo.cli import main

from zoo_test_paths import CFG

TINY = {
    "nc": 3,
    "scales": {"n": [0.5, 0.25, 256], "s": [1.0, 0.5, 512]},
    "backbone": [
        [-1, 1, "Conv", [32, 3, 2]],
        [-1, 2, "C2f", [32, True]],
        [-1, 1, "SCDown", [64, 3, 2]],
        [-1, 1, "SPPF", [64, 5]],
    ],
    "head": [
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 1], 1, "Concat", [1]],
        [-1, 1, "C2f", [32]],
        [[6, 3], 1, "v10Detect", ["nc"]],
    ],
}


def _write(tmp_path, data, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _broken(section: str, row: int, col: int, value):
    cfg = copy.deepcopy(TINY)
    cfg[section][row][col] = value
    return cfg


CASES = [
    (_broken("backbone", 1, 2, "C2ff"), r"bad.yaml: row 1 \(backbone\): unknown module 'C2ff'; did you mean 'C2f'"),
    (_broken("backbone", 2, 3, [64, 3, 2, 7, 8]), r"row 2 \(backbone\): SCDown got args .*signature SCDown\(c1: int, c2: int"),
    (_broken("head", 1, 0, [-1, 9]), r"row 5 \(head\): 'from' 9 points forward"),
    (_broken("backbone", 1, 0, -5), r"row 1 \(backbone\): 'from' -5 is out of range"),
    (_broken("backbone", 0, 1, 0), r"row 0 \(backbone\): 'repeats' must be a positive integer"),
    (_broken("head", 1, 0, [-1, 2]),
     r"row 5 \(head\): Concat \(input rows \[4, 2\]\): concatenates maps of different resolutions \(strides \[2.0, 4.0\]\)"),
    # found by the fuzzer below: a head's class count of 0 (or False) was a ZeroDivisionError
    (_broken("head", 3, 3, [0]), r"row 7 \(head\): v10Detect.*needs a positive class count nc, got 0"),
    (_broken("head", 3, 3, [False]), r"row 7 \(head\): v10Detect.*needs a positive class count nc, got False"),
]


@pytest.mark.parametrize("cfg,pattern", CASES)
def test_row_errors_name_file_row_and_problem(tmp_path, cfg, pattern):
    path = _write(tmp_path, cfg)
    with pytest.raises(ConfigError, match=pattern):
        Model(path)


def test_bad_scale_lists_the_available_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"bad.yaml: bad scale 'q': this config has scales n, s"):
        Model(_write(tmp_path, TINY), scale="q")


@pytest.mark.parametrize("text,pattern", [
    ("- just\n- a list\n", "top level must be a mapping"),
    ("nc: 3\nhead: []\n", "missing 'backbone'"),
    ("backbone: [[-1, 1, Conv]\n", "not valid YAML at line"),
    ("backbone:\n  - [-1, 1, Conv, 16]\n", r"row 0 \(backbone\): 'args' must be a list"),
    ("backbone:\n  - [-1, 1, Conv]\n", r"row 0 \(backbone\): a row must be \[from, repeats, module, args\]"),
])
def test_file_level_errors(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Model(_write(tmp_path, text))


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    path = _write(tmp_path, _broken("backbone", 1, 2, "C2ff"))
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "bad.yaml: row 1 (backbone): unknown module 'C2ff'" in err


# ------------------------------------------------------------------------------ fuzzing
VALUES = st.one_of(
    st.integers(-30, 300), st.sampled_from([None, True, False, "nc", "None", "nearest", "C2f", "Conv", 0.5, [], [1, 2], "x"]),
)


# scale entries and top-level multiples / nc: strings, bools, nan/inf, negative, huge
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 10**13),
    st.sampled_from([0, 1e9, 1e300, 10**400, "abc", "1e3", None, True, [], 256.0]),
)
MULTIPLES = ["depth_multiple", "width_multiple", "max_channels", "nc"]


@st.composite
def mutated_configs(draw):
    """``(cfg, alias)``: a mutated TINY, plus where to put a YAML alias (see ``_with_alias``). The alias
    is applied inside the test so hypothesis never has to print a 10**8-value bomb."""
    cfg = copy.deepcopy(TINY)
    alias = None
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["cell", "arg", "drop_arg", "drop_row", "top", "scale", "multiple", "alias"]))
        section = draw(st.sampled_from(["backbone", "head"]))
        if kind == "scale" and isinstance(cfg.get("scales"), dict) and isinstance(cfg["scales"].get("n"), list):
            cfg["scales"]["n"][draw(st.integers(0, 2))] = draw(NUMBERS)
            continue
        if kind == "multiple":  # top-level multiples count only without 'scales'
            cfg[draw(st.sampled_from(MULTIPLES))] = draw(NUMBERS)
            if draw(st.booleans()):
                cfg.pop("scales", None)
            continue
        if kind == "alias":
            alias = (draw(st.sampled_from(["arg", "from", "row", "scale", "self", "shared"])), section,
                     draw(st.integers(0, 9)), draw(st.integers(1, 8)))
            continue
        rows = cfg[section]
        if not isinstance(rows, list) or not rows:
            continue
        i = draw(st.integers(0, len(rows) - 1))
        row = rows[i]
        if kind != "drop_row" and not (isinstance(row, list) and len(row) == 4):
            continue  # an earlier "top" mutation already replaced the rows; nothing to edit in place
        if kind == "cell":
            row[draw(st.integers(0, 3))] = draw(VALUES)
        elif kind == "arg" and isinstance(row[3], list):
            row[3].insert(draw(st.integers(0, len(row[3]))), draw(VALUES))
        elif kind == "drop_arg" and isinstance(row[3], list) and row[3]:
            row[3].pop(draw(st.integers(0, len(row[3]) - 1)))
        elif kind == "drop_row":
            rows.pop(i)
        elif kind == "top":
            key = draw(st.sampled_from(["nc", "scales", "backbone", "head"]))
            cfg[key] = draw(VALUES)
    return cfg, alias


def _with_alias(cfg: dict, alias) -> dict:
    """What YAML anchors and aliases load as: one object shared at every place it is named, a
    ``levels``-deep "billion laughs" (10**levels values), or a row that contains itself."""
    if alias is None:
        return cfg
    where, section, i, levels = alias
    rows = cfg.get(section)
    if not isinstance(rows, list) or not rows or not isinstance(rows[i % len(rows)], list) or len(rows[i % len(rows)]) != 4:
        return cfg
    row = rows[i % len(rows)]
    bomb: list = [1] * 10
    for _ in range(levels - 1):
        bomb = [bomb] * 10
    if where == "arg" and isinstance(row[3], list):
        row[3].append(bomb)
    elif where == "from":
        row[0] = bomb
    elif where == "row":
        rows[i % len(rows)] = bomb
    elif where == "scale" and isinstance(cfg.get("scales"), dict):
        cfg["scales"]["n"] = [bomb, 0.25, 256]
    elif where == "self" and isinstance(row[3], list):
        row[3].append(row)
    elif where == "shared":  # harmless sharing: two rows naming the same args
        row[3] = rows[0][3]
    return cfg


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=mutated_configs(), as_yaml=st.booleans())
def test_mutated_configs_raise_only_config_errors(drawn, as_yaml, tmp_path_factory):
    """Built from the dict, or from its YAML text (aliases written as &anchors), any mutation either
    builds or raises one ConfigError line, never another exception, and memory stays bounded (a low
    ``max_params`` keeps every model small; bombs and cycles must be refused before they expand)."""
    cfg = _with_alias(*drawn)
    source: object = cfg
    if as_yaml:
        source = tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"
        source.write_text(yaml.safe_dump(cfg, default_flow_style=None))
    scale = "n" if isinstance(cfg.get("scales"), dict) and "n" in cfg["scales"] else None
    rss = _max_rss_mb()
    try:
        model = Model(source, scale=scale, max_params=2_000_000)
    except ConfigError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith(str(source) if as_yaml else "<dict>")
    else:
        assert isinstance(model.records, tuple)
    assert _max_rss_mb() - rss < 300


def test_a_head_rejecting_declared_strides_is_a_config_error(monkeypatch):
    """Without a trial run, a head's set_strides failure is reported like the trial run reports it:
    one ConfigError naming the row, not a bare exception."""
    from zoo.nn.yolov10 import v10Detect

    def refuse(self, strides):
        raise RuntimeError("no such stride")

    monkeypatch.setattr(v10Detect, "set_strides", refuse)
    with pytest.raises(ConfigError, match=r"yolov10n.yaml: row 23 \(head\): v10Detect cannot take its input "
                                          r"strides \[8.0, 16.0, 32.0\]: RuntimeError: no such stride"):
        Model(CFG / "yolov10n.yaml")
