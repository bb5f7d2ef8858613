"""Ghost blocks (GhostConv, GhostBottleneck, C3Ghost): Ultralytics 8.4 parameter counts and key names,
declared strides against a trial run, fusing, the ghost split itself, and the stride/width errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from zoo import Model
from zoo.errors import ConfigError
from zoo.nn.ghost import C3Ghost, GhostBottleneck, GhostConv

from batchnorm_stats import fuse_changes_output_by

# Parameter counts of the Ultralytics 8.4.190 blocks built with the same args (measured in a
# separate environment; outputs there matched these blocks with the same weights exactly).
ULTRALYTICS_PARAMS = [
    (GhostConv, (16, 32), 720), (GhostConv, (16, 32, 3, 2), 2768), (GhostConv, (16, 16, 1, 1, 1, False), 360),
    (GhostBottleneck, (16, 16), 476), (GhostBottleneck, (16, 32, 3, 2), 2008),
    (GhostBottleneck, (32, 32, 5, 1), 1208), (GhostBottleneck, (16, 48, 5, 2), 3756),
    (C3Ghost, (16, 32, 1), 2140), (C3Ghost, (32, 32, 2), 3128),
]


@pytest.mark.parametrize("cls, args, expected", ULTRALYTICS_PARAMS,
                         ids=[f"{c.__name__}{a}" for c, a, _ in ULTRALYTICS_PARAMS])
def test_parameter_counts_match_ultralytics(cls, args, expected):
    assert sum(p.numel() for p in cls(*args).parameters()) == expected


def test_state_dict_keys_follow_ultralytics():
    block = GhostBottleneck(16, 32, 3, 2)
    layers = {key.rsplit(".", 1)[0] for key in block.state_dict()}
    assert layers == {"conv.0.cv1.bn", "conv.0.cv1.conv", "conv.0.cv2.bn", "conv.0.cv2.conv", "conv.1.bn",
                      "conv.1.conv", "conv.2.cv1.bn", "conv.2.cv1.conv", "conv.2.cv2.bn", "conv.2.cv2.conv",
                      "shortcut.0.bn", "shortcut.0.conv", "shortcut.1.bn", "shortcut.1.conv"}
    assert len(block.state_dict()) == 42
    # at stride 1 the depthwise conv and the shortcut are parameter-free identities
    plain = GhostBottleneck(16, 16)
    assert isinstance(plain.conv[1], nn.Identity) and isinstance(plain.shortcut, nn.Identity)
    assert "m.1.conv.2.cv2.conv.weight" in C3Ghost(32, 32, 2).state_dict()


# (row, output stride given a stride-2 stem, output channels)
ROWS = [
    ([-1, 1, "GhostConv", [16]], 2, 16),
    ([-1, 1, "GhostConv", [16, 3, 2]], 4, 16),
    ([-1, 1, "GhostBottleneck", [8, 3, 1]], 2, 8),
    ([-1, 1, "GhostBottleneck", [24, 3, 2]], 4, 24),
    ([-1, 1, "GhostBottleneck", [8]], 2, 8),
    ([-1, 3, "C3Ghost", [16]], 2, 16),
]


@pytest.mark.parametrize("row, stride, channels", ROWS, ids=[r[0][2] + str(r[0][3]) for r in ROWS])
def test_rows_declare_their_strides(row, stride, channels):
    cfg = {"nc": 3, "backbone": [[-1, 1, "Conv", [8, 3, 2]], row, [-1, 1, "Conv", [8, 1, 1]]]}
    declared = Model(cfg)
    measured = Model(cfg, trial_run=True)  # runs the rows: the declared rule must agree
    assert declared.stride.tolist() == measured.stride.tolist() == [stride]
    with torch.no_grad():
        _, kept = declared.eval().run_rows(torch.rand(2, 3, 64, 96), keep=(1,))
    assert kept[1].shape == (2, channels, 64 // stride, 96 // stride)


def test_c3ghost_takes_the_repeats_as_its_block_count():
    model = Model({"nc": 3, "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 3, "C3Ghost", [16]]]})
    block = model.model[1]
    assert isinstance(block, C3Ghost) and len(block.m) == 3
    assert all(isinstance(b, GhostBottleneck) for b in block.m)


def test_ghost_conv_makes_half_its_channels_from_the_other_half():
    conv = GhostConv(8, 16, 3).eval()
    x = torch.rand(2, 8, 10, 12)
    with torch.no_grad():
        y = conv(x)
        primary = conv.cv1(x)
        assert torch.equal(y[:, :8], primary)
        assert torch.equal(y[:, 8:], conv.cv2(primary))
    assert conv.cv2.conv.groups == 8 and conv.cv2.conv.kernel_size == (5, 5)


def test_stride_one_bottleneck_adds_its_input():
    block = GhostBottleneck(16, 16).eval()
    x = torch.rand(1, 16, 6, 6)
    with torch.no_grad():
        assert torch.allclose(block(x), block.conv(x) + x)


@pytest.mark.parametrize("args, message", [([16, 3, 3], "must be 1 or 2"), ([16, 3, 1], "must equal c2")])
def test_bad_bottleneck_rows_are_config_errors(args, message):
    cfg = {"nc": 3, "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "GhostBottleneck", args]]}
    with pytest.raises(ConfigError, match=message):
        Model(cfg)


def test_fuse_folds_every_norm_and_keeps_outputs():
    cfg = {"nc": 3, "backbone": [
        [-1, 1, "GhostConv", [16, 3, 2]], [-1, 1, "GhostBottleneck", [32, 3, 2]], [-1, 2, "C3Ghost", [32]],
        [-1, 1, "GhostBottleneck", [32, 5, 1]]]}
    model = Model(cfg)
    change = fuse_changes_output_by(model, torch.rand(1, 3, 32, 48))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert change < 1e-5
