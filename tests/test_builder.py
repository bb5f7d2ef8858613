"""parse_model: wiring, scaling, symbols, multi-input and multi-output rows, records."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

import zoo.nn  # noqa: F401
from zoo import ConfigError, Model, register
from zoo.config import resolve_spec
from zoo.registry import MODULES
from zoo.wiring import in_first

from zoo_test_paths import CFG


@register(wiring=in_first())
class TwoLevelStem(nn.Module):
    """Test block returning two feature maps (strides 2 and 4) with declared channels."""

    def __init__(self, c1: int, width: int = 8) -> None:
        super().__init__()
        self.a = nn.Conv2d(c1, width, 3, 2, 1)
        self.b = nn.Conv2d(width, 2 * width, 3, 2, 1)
        self.out_channels = [width, 2 * width]

    def forward(self, x):
        a = self.a(x)
        return [a, self.b(a)]


def test_width_depth_and_repeats_follow_the_scale():
    model = Model(CFG / "yolov10n.yaml")
    c2f = model.records[4]  # [-1, 6, C2f, [256, True]] at depth 0.33 / width 0.25
    assert c2f.repeats == 2 and c2f.args == (64, 64, 2, True) and c2f.out_channels == 64
    assert len(model.model[4].m) == 2
    big = Model(CFG / "yolov10.yaml", scale="l")
    assert big.scale == "l" and big.records[4].repeats == 6 and big.records[4].out_channels == 256


def test_scale_resolution_order(tmp_path):
    assert resolve_spec(CFG / "yolov10n.yaml").scale == "n"
    assert resolve_spec(CFG / "yolov10.yaml").scale == "n"  # first listed
    assert resolve_spec(CFG / "yolov10.yaml", scale="m").width == 0.75
    suffixed = tmp_path / "yolov10s.yaml"
    suffixed.write_text((CFG / "yolov10.yaml").read_text())
    assert resolve_spec(suffixed).scale == "s"  # file-name convention as a fallback
    assert resolve_spec(suffixed, scale="l").scale == "l"  # explicit override wins


def test_symbols_are_resolved_without_eval():
    cfg = {
        "nc": 7, "hidden": 12, "mode": "nearest",
        "backbone": [[-1, 1, "Conv", ["hidden", 3, 2]], [-1, 1, "nn.Upsample", ["None", 2, "mode"]]],
        "head": [[-1, 1, "Conv", ["nc", 1]]],
    }
    model = Model(cfg)
    assert model.records[0].args == (3, 16, 3, 2)  # 12 rounded up to a multiple of 8
    assert model.records[1].args == (None, 2, "nearest")
    assert model.records[2].out_channels == 8  # a Conv's width is scaled (rounded to 8) even when it equals nc


def test_multi_output_row_and_index_rows_know_channels():
    cfg = {
        "backbone": [[-1, 1, "TwoLevelStem", [8]]],
        "head": [
            [0, 1, "Index", [0]],
            [0, 1, "Index", [1]],
            [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
            [[1, -1], 1, "Concat", [1]],
            [-1, 1, "Conv", [32, 3]],
        ],
    }
    model = Model(cfg)
    assert model.records[0].out_channels == [8, 16]
    assert [r.out_channels for r in model.records[1:]] == [8, 16, 16, 24, 32]
    out = model(torch.zeros(2, 3, 64, 96))
    assert out.shape == (2, 32, 32, 48)


def test_records_describe_every_row():
    model = Model(CFG / "yolov10n.yaml")
    head = model.records[-1]
    assert head.from_ == (16, 19, 22) and head.module == "v10Detect" and head.section == "head"
    assert head.args == (80, [64, 128, 256])
    assert sum(r.params for r in model.records) == sum(p.numel() for p in model.parameters())
    assert model.saved_rows == frozenset({4, 6, 10, 13, 16, 19, 22})


def test_builder_names_no_module_class():
    """parse_model must not special-case blocks: no registered name appears in its source."""
    source = (Path(zoo.builder.__file__)).read_text()
    code = re.sub(r'""".*?"""', "", source, flags=re.S)
    for entry in MODULES:
        assert not re.search(rf"\b{re.escape(entry.name)}\b", code), entry.name
    assert "eval(" not in code and "exec(" not in code and "globals()" not in code


def test_keyword_inputs_reach_only_rows_that_accept_them():
    @register()
    class ScaleByKeyword(nn.Module):
        def forward(self, x, *, gain: float = 1.0):
            return x * gain

    model = Model({"backbone": [[-1, 1, "Conv", [8, 1]], [-1, 1, "ScaleByKeyword", []]]}).eval()
    x = torch.randn(1, 3, 16, 16)
    assert torch.allclose(model(x, gain=2.0), 2 * model(x))
    with pytest.raises(TypeError, match="no row accepts"):
        model(x, unknown=1)


def test_config_error_for_channel_mismatch_comes_from_the_trial_run():
    cfg = {"yaml_file": "mismatch.yaml", "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "nn.GroupNorm", [4, 8]]]}
    with pytest.raises(ConfigError, match=r"mismatch.yaml: row 1 \(backbone\): nn.GroupNorm fails on its input"):
        Model(cfg)


def test_dict_and_path_configs_build_the_same_model():
    import yaml

    data = yaml.safe_load((CFG / "yolov10n.yaml").read_text())
    a, b = Model(CFG / "yolov10n.yaml"), Model(data, scale="n")
    assert a.state_dict().keys() == b.state_dict().keys()


# ----------------------------------------------------------------------------- declared strides
def _no_trial_run(monkeypatch):
    def refuse(self, size):
        raise AssertionError("the trial run was not needed: every row declares its spatial rule")

    monkeypatch.setattr(Model, "_dry_run", refuse)


@pytest.mark.parametrize("name", ["yolov10n.yaml", "yolov10s.yaml", "rtdetr-l.yaml", "rtdetr-shapes.yaml",
                                  "sam-tinyvit.yaml", "rtdetr-resnet50.yaml"])
def test_declared_strides_build_the_same_model_as_the_trial_run(name, monkeypatch):
    torch.manual_seed(0)
    tried = Model(CFG / name, trial_run=True)
    _no_trial_run(monkeypatch)
    torch.manual_seed(0)
    declared = Model(CFG / name)
    assert declared.stride.tolist() == tried.stride.tolist() == ([16.0] if "sam" in name else [8.0, 16.0, 32.0])
    # the heads got the same strides (v10Detect's prior biases depend on them)
    for (key, a), b in zip(declared.state_dict().items(), tried.state_dict().values()):
        assert torch.equal(a, b), key


def test_graph_strides_follow_each_row():
    from zoo.builder import parse_model

    strides = parse_model(resolve_spec(CFG / "yolov10n.yaml")).strides
    assert strides == [2, 4, 4, 8, 8, 16, 16, 32, 32, 32, 32, 16, 16, 16, 8, 8, 8, 16, 16, 16, 32, 32, 32, None]


@pytest.mark.parametrize("name", [
    "yolov10n.yaml", "rtdetr-l.yaml", "rtdetr-resnet50.yaml", "rtdetr-mobilevit.yaml", "sam-tinyvit.yaml",
    "tinyvit-5m-cls.yaml", "mobilevit-xxs-cls.yaml", "mobilevitv2-050-cls.yaml",
])
def test_declared_strides_match_every_rows_measured_output(name):
    """Each family's spatial rules against the map sizes a real forward produces, row by row."""
    from zoo.builder import parse_model
    from zoo_test_paths import build_small

    declared = parse_model(resolve_spec(CFG / name)).strides
    assert declared is not None, "every row of the shipped configs declares its spatial rule"
    model = build_small(name).eval()
    size = 64
    measured: dict[int, object] = {}

    def stride_of(t):
        if isinstance(t, list):
            return [stride_of(v) for v in t]
        return size / t.shape[-1] if isinstance(t, torch.Tensor) and t.dim() == 4 else None

    with torch.no_grad():
        model.run_rows(torch.rand(1, 3, size, size), hook=lambda i, rec, a, out: measured.update({i: stride_of(out)}))
    for row, stride in enumerate(declared):
        if stride is not None:  # None: a head's output, not a feature map
            assert measured[row] == stride, (name, row, model.records[row].module)
    assert declared[-1] is None  # the last row is a head (or classifier)


def test_rows_without_a_spatial_rule_get_the_trial_run(monkeypatch):
    calls = []
    original = Model._dry_run

    def spy(self, size):
        calls.append(size)
        return original(self, size)

    monkeypatch.setattr(Model, "_dry_run", spy)
    # nn.Upsample to a fixed size: its output stride depends on the input image, so it is not declared
    cfg = {"backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "nn.Upsample", [[5, 5], None, "nearest"]]]}
    Model(cfg)
    cfg = {"backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]]]}
    Model(cfg)
    Model({"backbone": [[-1, 1, "TwoLevelStem", []], [-1, 1, "Index", [1]]]})
    assert calls == [64, 64]  # the fixed-size upsample and the undeclared TwoLevelStem


def test_widths_equal_to_the_class_count_scale_like_any_other():
    """Ultralytics 8.4 scales every block width (only Classify keeps nc): yolov8n and yolov10n trained on
    64 classes keep their 16-channel stem."""
    for name in ("yolov8n", "yolov10n"):
        assert [r.out_channels for r in Model(name, nc=64).records[:2]] == [16, 32]


def test_a_config_scale_key_picks_the_scale():
    """Ultralytics' checkpoints store their YAML with ``scale`` and ``yaml_file: yolov8.yaml``: the key
    decides (an explicit scale still wins)."""
    cfg = yaml.safe_load((CFG / "yolov8.yaml").read_text()) | {"scale": "s", "yaml_file": "yolov8.yaml"}
    assert resolve_spec(cfg).scale == "s" and resolve_spec(cfg, scale="m").scale == "m"


def test_a_config_channels_key_sets_the_input_channels():
    """Ultralytics writes ``channels`` into the YAML its checkpoints carry (1 for a grayscale model)."""
    cfg = {"channels": 1, "backbone": [[-1, 1, "Conv", [8, 3, 2]]]}
    assert Model(cfg).model[0].conv.in_channels == 1 and Model(cfg, ch=3).model[0].conv.in_channels == 3
    with pytest.raises(ConfigError, match="'channels'"):
        Model(cfg | {"channels": "rgb"})
