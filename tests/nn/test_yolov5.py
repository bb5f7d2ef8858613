"""YOLOv3/v5/v8 CSP blocks (BottleneckCSP, C3x, C3TR, SPP, Focus, C1, C2): Ultralytics 8.4 parameter
counts and key names, wiring (repeats, widths), declared strides against a trial run, fusing, and the
exact behaviour of Focus and of the transformer layer's attention layout."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from zoo import Model
from zoo.nn.yolov5 import SPP, BottleneckCSP, C3TR, C3x, Focus, TransformerBlock, TransformerLayer
from zoo.nn.yolov8 import C1, C2

from batchnorm_stats import fuse_changes_output_by

# Parameter counts of the Ultralytics 8.4.190 blocks built with the same args (measured in a
# separate environment; outputs there matched these blocks with the same weights to <= 5e-7).
ULTRALYTICS_PARAMS = [
    (BottleneckCSP, (16, 32, 1), 6624), (BottleneckCSP, (32, 32, 2, True), 11808),
    (BottleneckCSP, (16, 24, 2, False, 2), 5208),
    (C3x, (16, 32, 1), 3264), (C3x, (32, 32, 2, True), 5376), (C3x, (16, 32, 2, False, 2, 0.25), 1504),
    (C3TR, (16, 32, 1), 4304), (C3TR, (32, 64, 2), 26144), (TransformerBlock, (16, 32, 4, 2), 20320),
    (SPP, (32, 64), 4768), (SPP, (16, 16, (3, 5)), 560),
    (Focus, (3, 16), 224), (Focus, (3, 16, 3), 1760), (Focus, (3, 16, 3, 2), 1760),
    (Focus, (4, 8, 1, 1, None, 1, False), 144),
    (C1, (16, 32, 1), 9856), (C1, (16, 16, 3), 7296), (C2, (16, 32, 1), 6336), (C2, (32, 32, 2, False, 2, 0.5), 9216),
]


@pytest.mark.parametrize("cls, args, expected", ULTRALYTICS_PARAMS,
                         ids=[f"{c.__name__}{a}" for c, a, _ in ULTRALYTICS_PARAMS])
def test_parameter_counts_match_ultralytics(cls, args, expected):
    assert sum(p.numel() for p in cls(*args).parameters()) == expected


def _layers(module: nn.Module) -> set[str]:
    return {key.rsplit(".", 1)[0] for key in module.state_dict()}


def test_state_dict_keys_follow_ultralytics():
    csp = BottleneckCSP(16, 32, 1)
    assert _layers(csp) == {"bn", "cv1.bn", "cv1.conv", "cv2", "cv3", "cv4.bn", "cv4.conv", "m.0.cv1.bn",
                            "m.0.cv1.conv", "m.0.cv2.bn", "m.0.cv2.conv"}
    assert len(csp.state_dict()) == 31
    tr = C3TR(16, 32, 1)
    assert _layers(tr) == {"cv1.bn", "cv1.conv", "cv2.bn", "cv2.conv", "cv3.bn", "cv3.conv", "m.linear",
                           "m.tr.0.fc1", "m.tr.0.fc2", "m.tr.0.k", "m.tr.0.ma", "m.tr.0.ma.out_proj",
                           "m.tr.0.q", "m.tr.0.v"}
    assert {"m.tr.0.ma.in_proj_weight", "m.tr.0.ma.in_proj_bias"} <= set(tr.state_dict())
    assert len(tr.state_dict()) == 29
    assert _layers(Focus(3, 16, 3)) == {"conv.bn", "conv.conv"}
    # C3x keeps C3's layout with cross-shaped kernels
    assert C3x(16, 32, 1).m[0].cv1.conv.weight.shape == (16, 16, 1, 3)
    assert C3x(16, 32, 1).m[0].cv2.conv.weight.shape == (16, 16, 3, 1)


def test_bottleneck_csp_norm_uses_the_ultralytics_model_settings():
    bn = BottleneckCSP(16, 32).bn
    assert (bn.eps, bn.momentum) == (1e-3, 0.03)


# (row, output stride given a stride-2 stem, output channels, inner block count)
ROWS = [
    ([-1, 2, "BottleneckCSP", [16]], 2, 16, 2),
    ([-1, 2, "C3x", [16, False]], 2, 16, 2),
    ([-1, 3, "C3TR", [16]], 2, 16, 3),
    ([-1, 1, "SPP", [24, [3, 5, 7]]], 2, 24, 3),
    ([-1, 1, "Focus", [16, 3]], 4, 16, None),
    ([-1, 1, "Focus", [16, 3, 2]], 8, 16, None),
    ([-1, 2, "C1", [16]], 2, 16, 2),
    ([-1, 2, "C2", [16, False]], 2, 16, 2),
]


def _inner_count(block: nn.Module) -> int:
    inner = block.m.tr if isinstance(block, C3TR) else block.m
    return len(inner)


@pytest.mark.parametrize("row, stride, channels, inner", ROWS, ids=[r[0][2] + str(r[0][3]) for r in ROWS])
def test_rows_wire_repeats_and_declare_their_strides(row, stride, channels, inner):
    cfg = {"nc": 3, "backbone": [[-1, 1, "Conv", [8, 3, 2]], row, [-1, 1, "Conv", [8, 1, 1]]]}
    declared = Model(cfg)
    measured = Model(cfg, trial_run=True)  # runs the rows: the declared rule must agree
    assert declared.stride.tolist() == measured.stride.tolist() == [stride]
    block = declared.model[1]
    assert type(block).__name__ == row[2]  # repeats went into the block, not an nn.Sequential of copies
    if inner is not None:
        assert _inner_count(block) == inner
    with torch.no_grad():
        _, kept = declared.eval().run_rows(torch.rand(2, 3, 64, 96), keep=(1,))
    assert kept[1].shape == (2, channels, 64 // stride, 96 // stride)


def test_width_scale_applies_to_the_output_channels():
    cfg = {"nc": 3, "scales": {"n": [0.33, 0.25, 1024]},
           "backbone": [[-1, 1, "Focus", [64, 3]], [-1, 3, "BottleneckCSP", [128]], [-1, 1, "SPP", [256]]]}
    model = Model(cfg, scale="n")
    assert model.model[1].cv4.conv.out_channels == 32  # make_divisible(128 * 0.25, 8)
    assert model.model[0].conv.conv.out_channels == 16
    assert len(model.model[1].m) == 1  # round(3 * 0.33)
    assert model.model[2].cv2.conv.out_channels == 64


def test_fuse_folds_every_norm_and_keeps_outputs():
    cfg = {"nc": 3, "backbone": [
        [-1, 1, "Focus", [16, 3]], [-1, 2, "BottleneckCSP", [16]], [-1, 1, "C3x", [24]], [-1, 1, "C3TR", [24]],
        [-1, 1, "SPP", [24]], [-1, 2, "C1", [16]], [-1, 1, "C2", [16]]]}
    model = Model(cfg)
    change = fuse_changes_output_by(model, torch.rand(1, 3, 32, 48))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.model[1].bn is None and model.model[1].cv2.bias is not None
    assert change < 1e-5


def test_focus_moves_each_2x2_block_into_channels_in_yolov5_order():
    focus = Focus(2, 8, act=False).eval()
    with torch.no_grad():  # make the conv an identity: 1x1 eye kernel, BN with unit statistics
        focus.conv.conv.weight.copy_(torch.eye(8).view(8, 8, 1, 1))
        focus.conv.bn.running_var.fill_(1 - focus.conv.bn.eps)
    x = torch.arange(2 * 2 * 4 * 6, dtype=torch.float).view(2, 2, 4, 6)
    with torch.no_grad():
        y = focus(x)
    expected = [x[..., 0::2, 0::2], x[..., 1::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 1::2]]
    assert torch.allclose(y, torch.cat(expected, 1), atol=1e-4)


def test_transformer_layer_matches_torch_multihead_attention_sequence_first():
    # Ultralytics runs torch's nn.MultiheadAttention on (N, B, C); the same weights give the same tokens here
    torch.manual_seed(0)
    layer = TransformerLayer(16, 4).eval()
    reference = nn.MultiheadAttention(16, 4).eval()
    reference.load_state_dict(layer.ma.state_dict())
    x = torch.randn(2, 10, 16)
    with torch.no_grad():
        seq_first = x.transpose(0, 1)
        attn = reference(layer.q(seq_first), layer.k(seq_first), layer.v(seq_first))[0] + seq_first
        expected = (layer.fc2(layer.fc1(attn)) + attn).transpose(0, 1)
        assert (layer(x) - expected).abs().max() < 1e-5


def test_transformer_block_projects_channels_only_when_they_differ():
    assert TransformerBlock(16, 16, 4, 1).conv is None
    block = TransformerBlock(16, 32, 4, 2).eval()
    assert block.conv is not None and len(block.tr) == 2
    with torch.no_grad():
        assert block(torch.rand(2, 16, 5, 7)).shape == (2, 32, 5, 7)
