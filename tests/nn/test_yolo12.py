"""YOLO12 area attention (AAttn, ABlock, A2C2f): Ultralytics 8.4 parameter counts and key layout, the
area split, the scale-dependent A2C2f wiring, the YOLO12 body's parameter counts, strides and fusing.

Counts were measured with Ultralytics 8.4.190 (it cannot run here). Outputs matched Ultralytics to
<= 1.2e-6 max abs (fp32, random weights and BatchNorm statistics, areas 1 and 4) before and after
fuse() in a scratch comparison.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from zoo import Model
from zoo.builder import parse_model
from zoo.config import resolve_spec
from zoo.errors import ConfigError
from zoo.nn.yolo11 import C3k, C3k2
from zoo.nn.yolo12 import A2C2f, AAttn, ABlock

from batchnorm_stats import fuse_in_place, randomise_batchnorm

ULTRALYTICS_PARAMS = [
    (AAttn, (64, 2, 1), 20160),
    (AAttn, (64, 2, 4), 20160),
    (AAttn, (128, 4, 4), 73088),
    (ABlock, (64, 2, 1.2, 1), 30168),
    (ABlock, (64, 2, 2.0, 4), 36928),
    (A2C2f, (64, 64, 1, True, 1), 26880),
    (A2C2f, (64, 64, 2, True, 4, False, 2.0), 49472),
    (A2C2f, (128, 128, 1, True, 4, True, 1.2), 85424),
    (A2C2f, (64, 128, 1, False, -1), 66432),
    (A2C2f, (128, 64, 2, False, -1, True, 1.2), 33472),
    (A2C2f, (32, 64, 1, True, 1, False, 2.0, 0.5, 1, True), 25856),
]


@pytest.mark.parametrize("cls, args, expected", ULTRALYTICS_PARAMS,
                         ids=[f"{c.__name__}{a}" for c, a, _ in ULTRALYTICS_PARAMS])
def test_parameter_counts_match_ultralytics(cls, args, expected):
    assert sum(p.numel() for p in cls(*args).parameters()) == expected


def test_state_dict_keys_follow_ultralytics():
    attended = A2C2f(64, 64, 1, True, 1, True, 1.2).state_dict()
    assert len(attended) == 73
    block = ["attn.qkv", "attn.proj", "attn.pe", "mlp.0", "mlp.1"]
    assert [k[: -len(".conv.weight")] for k in attended if k.endswith(".conv.weight")] == (
        ["cv1", "cv2"] + [f"m.0.{i}.{name}" for i in (0, 1) for name in block])
    assert [k for k in attended if not (k.endswith(".conv.weight") or ".bn." in k)] == ["gamma"]
    plain = A2C2f(64, 64, 1, False).state_dict()
    assert len(plain) == 54
    assert [k[: -len(".conv.weight")] for k in plain if k.endswith(".conv.weight")] == [
        "cv1", "cv2", "m.0.cv1", "m.0.cv2", "m.0.cv3", "m.0.m.0.cv1", "m.0.m.0.cv2", "m.0.m.1.cv1", "m.0.m.1.cv2"]


def _silence_positional_conv(attn: AAttn) -> None:
    with torch.no_grad():
        attn.pe.bn.weight.zero_()
        attn.pe.bn.bias.zero_()


def test_areas_are_independent_row_major_runs():
    torch.manual_seed(0)
    attn = AAttn(64, num_heads=2, area=2).eval()
    _silence_positional_conv(attn)  # the 7x7 conv mixes across areas; without it each area stands alone
    whole = AAttn(64, num_heads=2, area=1).eval()
    whole.load_state_dict(attn.state_dict())
    x = torch.randn(2, 64, 8, 6)
    with torch.no_grad():
        split = attn(x)
        halves = torch.cat((whole(x[:, :, :4]), whole(x[:, :, 4:])), 2)
        assert torch.allclose(split, halves, atol=1e-5)
        assert not torch.allclose(split, whole(x), atol=1e-3)  # global attention differs


def test_area_attention_equals_the_explicit_softmax_formula():
    # what Ultralytics computes with plain matmuls: per area and head, softmax((q * d^-0.5)^T k), v @ attn^T
    torch.manual_seed(1)
    attn = AAttn(128, num_heads=4, area=4).eval()
    x = torch.randn(1, 128, 5, 8)  # 40 tokens: areas of 10 tokens, i.e. 1.25 rows
    heads, d = 4, 32
    with torch.no_grad():
        tokens = attn.qkv(x).flatten(2).transpose(1, 2).reshape(4, 10, heads, 3 * d).permute(0, 2, 3, 1)
        q, k, v = tokens.split(d, dim=2)  # (areas, heads, d, tokens)
        weights = ((q * d**-0.5).transpose(-2, -1) @ k).softmax(-1)
        mixed = (v @ weights.transpose(-2, -1)).permute(0, 3, 1, 2).reshape(1, 5, 8, 128).permute(0, 3, 1, 2)
        values = v.permute(0, 3, 1, 2).reshape(1, 5, 8, 128).permute(0, 3, 1, 2)
        expected = attn.proj(mixed + attn.pe(values))
        assert torch.allclose(attn(x), expected, atol=1e-5)


def test_tokens_that_do_not_split_into_areas_are_refused():
    with pytest.raises(ValueError, match="equal areas"):
        AAttn(64, 2, area=4)(torch.randn(1, 64, 3, 5))


def test_ablock_starts_from_small_truncated_normal_convs():
    torch.manual_seed(0)
    block = ABlock(256, 8, 1.2, 1)
    weights = torch.cat([m.weight.flatten() for m in block.modules() if isinstance(m, nn.Conv2d)])
    assert 0.018 < weights.std().item() < 0.022
    assert abs(weights.mean().item()) < 1e-3


def test_a2c2f_residual_scales_by_gamma():
    torch.manual_seed(0)
    block = A2C2f(64, 64, 1, True, 1, True, 1.2).eval()
    assert torch.equal(block.gamma.detach(), torch.full((64,), 0.01))
    x = torch.randn(1, 64, 4, 4)
    with torch.no_grad():
        block.gamma.zero_()
        assert torch.equal(block(x), x)
    assert A2C2f(64, 64, 1, False, -1, True, 1.2).gamma is None  # no residual without area attention


@pytest.mark.parametrize("args, message", [((64, 48, 1), "multiple of 32"),
                                           ((32, 64, 1, True, 1, True), "channel count")])
def test_a2c2f_rejects_bad_widths(args, message):
    with pytest.raises(ValueError, match=message):
        A2C2f(*args)


SCALES = {"n": [0.5, 0.25, 1024], "s": [0.5, 0.5, 1024], "m": [0.5, 1.0, 512], "l": [1.0, 1.0, 512],
          "x": [1.0, 1.5, 512]}


@pytest.mark.parametrize("scale, residual", [("n", False), ("m", False), ("l", True), ("x", True)])
def test_a2c2f_rows_get_residual_and_mlp_ratio_at_l_x(scale, residual):
    rows = [[-1, 1, "Conv", [256, 3, 2]], [-1, 1, "A2C2f", [256, True, 4]], [-1, 1, "A2C2f", [256, False, -1]]]
    model = Model({"nc": 80, "scales": SCALES, "backbone": rows}, scale=scale)
    attended, plain = model.model[1], model.model[2]
    hidden = attended.cv1.conv.out_channels
    assert (attended.gamma is not None) == residual
    assert attended.m[0][0].mlp[0].conv.out_channels == int(hidden * (1.2 if residual else 2.0))
    assert attended.m[0][0].attn.area == 4 and attended.m[0][0].attn.num_heads == hidden // 32
    assert plain.gamma is None and isinstance(plain.m[0], C3k)


# yolo12.yaml without its Detect row
YOLO12_BODY_ROWS = [
    [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 2, "C3k2", [256, False, 0.25]],
    [-1, 1, "Conv", [256, 3, 2]], [-1, 2, "C3k2", [512, False, 0.25]], [-1, 1, "Conv", [512, 3, 2]],
    [-1, 4, "A2C2f", [512, True, 4]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 4, "A2C2f", [1024, True, 1]],
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 6], 1, "Concat", [1]], [-1, 2, "A2C2f", [512, False, -1]],
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 4], 1, "Concat", [1]], [-1, 2, "A2C2f", [256, False, -1]],
    [-1, 1, "Conv", [256, 3, 2]], [[-1, 11], 1, "Concat", [1]], [-1, 2, "A2C2f", [512, False, -1]],
    [-1, 1, "Conv", [512, 3, 2]], [[-1, 8], 1, "Concat", [1]], [-1, 2, "C3k2", [1024, True]],
]
# Ultralytics 8.4.190 parse_model: parameters of all rows but Detect
YOLO12_BODY = {"n": 2_137_376, "m": 18_726_464, "l": 24_978_080}


@pytest.mark.parametrize("scale", list(YOLO12_BODY))
def test_yolo12_body_matches_ultralytics_params(scale):
    model = Model({"nc": 80, "scales": SCALES, "backbone": YOLO12_BODY_ROWS}, scale=scale)
    assert sum(p.numel() for p in model.parameters()) == YOLO12_BODY[scale]
    assert isinstance(model.model[20], C3k2)


def test_declared_strides_match_the_row_outputs():
    rows = [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "A2C2f", [64, True, 4]], [-1, 1, "Conv", [64, 3, 2]],
            [-1, 2, "A2C2f", [64, False, -1]], [-1, 1, "A2C2f", [64, True, 1, True, 1.2]]]
    cfg = {"nc": 3, "backbone": rows}
    graph = parse_model(resolve_spec(cfg), ch=3)
    assert graph.strides == [2.0, 2.0, 4.0, 4.0, 4.0]
    model = Model(cfg).eval()
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        _, kept = model.run_rows(x, keep=tuple(range(len(rows))))
    for i, stride in enumerate(graph.strides):
        assert kept[i].shape[-2:] == (32 / stride, 48 / stride), i


def test_a2c2f_row_with_too_narrow_hidden_width_is_a_config_error():
    rows = [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "A2C2f", [48, True, 1]]]
    with pytest.raises(ConfigError, match="multiple of 32"):
        Model({"nc": 3, "backbone": rows})


def test_fuse_keeps_outputs():
    torch.manual_seed(0)
    block = A2C2f(64, 64, 2, True, 4, True, 1.2)
    randomise_batchnorm(block)
    for m in block.modules():
        if isinstance(m, nn.Conv2d):  # larger than ABlock's init, so the softmax is far from uniform
            nn.init.kaiming_uniform_(m.weight, a=5**0.5)
    with torch.no_grad():
        block.gamma.uniform_(0.5, 1.5)
    block.eval()
    x = torch.randn(2, 64, 8, 6)
    with torch.no_grad():
        before = block(x)
        fuse_in_place(block)
        after = block(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    assert (after - before).abs().max() <= 1e-5 * max(1.0, before.abs().max().item())
