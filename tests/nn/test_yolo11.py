"""YOLO11 blocks (C3k, C3k2, PSABlock, C2PSA, C2fPSA): Ultralytics 8.4 parameter counts and key layout,
the scale-dependent C3k2 wiring, the YOLO11 / YOLO26 bodies' parameter counts, strides and fusing.

Ultralytics cannot run here; the counts below were measured with Ultralytics 8.4.190 (its blocks
built with the same args, and its parse_model on yolo11.yaml / yolo26.yaml without the last row).
Outputs matched Ultralytics to <= 1.3e-6 max abs (fp32, random BatchNorm statistics) before and
after fuse() in a scratch comparison.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from zoo import Model
from zoo.builder import parse_model
from zoo.config import resolve_spec
from zoo.errors import ConfigError
from zoo.nn.yolo11 import C2PSA, C3k, C3k2, C2fPSA, PSABlock
from zoo.nn.yolov5 import SPPF, Bottleneck
from zoo.nn.yolov10 import Attention

from batchnorm_stats import fuse_in_place, randomise_batchnorm

# (class, args, Ultralytics 8.4.190 parameter count)
ULTRALYTICS_PARAMS = [
    (C3k, (16, 32, 1, True, 1, 0.5, 3), 6336),
    (C3k, (32, 32, 2, False, 1, 0.5, 5), 27904),
    (C3k, (24, 16, 1, True, 2, 0.5, 3), 1600),
    (C3k2, (16, 32, 1, False, 0.5, False, 1, True), 4528),
    (C3k2, (32, 32, 2, True, 0.25, False, 1, True), 3168),
    (C3k2, (64, 64, 2, False, 0.25), 11040),
    (C3k2, (32, 64, 1, False, 0.5, True), 25664),
    (C3k2, (128, 256, 1, True, 0.5, True), 397568),
    (C3k2, (64, 64, 1, True, 0.5, False, 1, False), 22016),
    (Attention, (64, 1, 0.5), 13376),
    (Attention, (128, 2, 0.5), 51328),
    (Attention, (64, 4, 0.25), 11264),
    (PSABlock, (64, 0.5, 1, True), 30144),
    (PSABlock, (128, 0.5, 2, False), 117632),
    (C2PSA, (64, 64, 1), 16352),
    (C2PSA, (256, 256, 2, 0.5), 367360),
    (C2PSA, (256, 256, 1, 0.25), 96448),
    (C2fPSA, (128, 128, 1), 71616),
    (C2fPSA, (256, 256, 2), 432896),
    (SPPF, (32, 32, 5, 3, True), 2656),
]


@pytest.mark.parametrize("cls, args, expected", ULTRALYTICS_PARAMS,
                         ids=[f"{c.__name__}{a}" for c, a, _ in ULTRALYTICS_PARAMS])
def test_parameter_counts_match_ultralytics(cls, args, expected):
    assert sum(p.numel() for p in cls(*args).parameters()) == expected


# Ultralytics' state-dict layout: its number of keys and the paths of its convs, in order
_PSA_BLOCK_CONVS = ["m.0.attn.qkv", "m.0.attn.proj", "m.0.attn.pe", "m.0.ffn.0", "m.0.ffn.1"]
ULTRALYTICS_LAYOUT = [
    (C3k, (8, 8, 1), {"k": 5}, 30, ["cv1", "cv2", "cv3", "m.0.cv1", "m.0.cv2"]),
    (C3k2, (16, 32, 1, True), {}, 54,
     ["cv1", "cv2", "m.0.cv1", "m.0.cv2", "m.0.cv3", "m.0.m.0.cv1", "m.0.m.0.cv2", "m.0.m.1.cv1", "m.0.m.1.cv2"]),
    (C3k2, (64, 64, 1, False, 0.5, True), {}, 54,
     ["cv1", "cv2", "m.0.0.cv1", "m.0.0.cv2", "m.0.1.attn.qkv", "m.0.1.attn.proj", "m.0.1.attn.pe",
      "m.0.1.ffn.0", "m.0.1.ffn.1"]),
    (C2PSA, (128, 128, 1), {}, 42, ["cv1", "cv2", *_PSA_BLOCK_CONVS]),
    (C2fPSA, (128, 128, 1), {}, 42, ["cv1", "cv2", *_PSA_BLOCK_CONVS]),
]


@pytest.mark.parametrize("cls, args, kwargs, n_keys, convs", ULTRALYTICS_LAYOUT,
                         ids=[f"{c.__name__}{a}" for c, a, *_ in ULTRALYTICS_LAYOUT])
def test_state_dict_keys_follow_ultralytics(cls, args, kwargs, n_keys, convs):
    state = cls(*args, **kwargs).state_dict()
    assert len(state) == n_keys
    assert [k[: -len(".conv.weight")] for k in state if k.endswith(".conv.weight")] == convs
    assert all(k.endswith(".conv.weight") or ".bn." in k for k in state)


def test_c3k2_inner_blocks_per_flag():
    plain = C3k2(32, 32, 1)
    assert isinstance(plain.m[0], Bottleneck) and plain.m[0].cv1.conv.out_channels == 8  # half of c=16, unlike C2f
    assert isinstance(C3k2(32, 32, 1, c3k=True).m[0], C3k)
    with_attn = C3k2(128, 128, 1, c3k=True, attn=True).m[0]  # attn wins over c3k
    assert isinstance(with_attn[0], Bottleneck) and isinstance(with_attn[1], PSABlock)
    assert with_attn[1].attn.num_heads == 1
    assert C2PSA(512, 512).m[0].attn.num_heads == 4  # 64-wide heads


def test_c3k_kernel_arg():
    block = C3k(16, 16, 2, k=5)
    assert [b.cv1.conv.kernel_size for b in block.m] == [(5, 5), (5, 5)]
    assert block.m[0].cv2.conv.kernel_size == (5, 5)


def _body(rows: list, scale_rows: bool = True) -> dict:
    cfg = {"nc": 80, "backbone": rows}
    if scale_rows:
        cfg["scales"] = {"n": [0.5, 0.25, 1024], "s": [0.5, 0.5, 1024], "m": [0.5, 1.0, 512],
                         "l": [1.0, 1.0, 512], "x": [1.0, 1.5, 512]}
    return cfg


@pytest.mark.parametrize("scale, inner", [("n", Bottleneck), ("s", Bottleneck), ("m", C3k), ("l", C3k), ("x", C3k)])
def test_c3k2_row_switches_to_c3k_at_m_l_x(scale, inner):
    rows = [[-1, 1, "Conv", [64, 3, 2]], [-1, 2, "C3k2", [128, False, 0.25]], [-1, 1, "C3k2", [128]],
            [-1, 1, "C3k2", [128, False, 0.5, True]]]
    model = Model(_body(rows), scale=scale)
    assert all(isinstance(b, inner) for b in model.model[1].m)
    assert len(model.model[1].m) == (2 if scale in "lx" else 1)  # depth-scaled repeats land in n
    assert isinstance(model.model[2].m[0], inner)  # the row that leaves c3k out gets it too
    assert isinstance(model.model[3].m[0][1], PSABlock)  # the attn flag survives the c3k override
    assert model.model[1].c == int(model.model[1].cv2.conv.out_channels * 0.25)


def test_c3k2_row_without_scales_keeps_its_args():
    model = Model(_body([[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "C3k2", [64, True]]], scale_rows=False))
    assert isinstance(model.model[1].m[0], C3k)
    model = Model(_body([[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "C3k2", [64]]], scale_rows=False))
    assert isinstance(model.model[1].m[0], Bottleneck)


def test_c2psa_row_must_keep_channels():
    rows = [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "C2PSA", [128]]]
    with pytest.raises(ConfigError, match="C2PSA"):
        Model(_body(rows, scale_rows=False))


# YOLO11 / YOLO26 detect bodies: the YAMLs' rows without the Detect row
def _yolo11_body(yolo26: bool = False) -> list:
    neck_flag = yolo26  # YOLO26's neck C3k2 rows ask for c3k
    sppf = [1024, 5, 3, True] if yolo26 else [1024, 5]
    return [
        [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 2, "C3k2", [256, False, 0.25]],
        [-1, 1, "Conv", [256, 3, 2]], [-1, 2, "C3k2", [512, False, 0.25]], [-1, 1, "Conv", [512, 3, 2]],
        [-1, 2, "C3k2", [512, True]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 2, "C3k2", [1024, True]],
        [-1, 1, "SPPF", sppf], [-1, 2, "C2PSA", [1024]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 6], 1, "Concat", [1]], [-1, 2, "C3k2", [512, neck_flag]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 4], 1, "Concat", [1]], [-1, 2, "C3k2", [256, neck_flag]],
        [-1, 1, "Conv", [256, 3, 2]], [[-1, 13], 1, "Concat", [1]], [-1, 2, "C3k2", [512, neck_flag]],
        [-1, 1, "Conv", [512, 3, 2]], [[-1, 10], 1, "Concat", [1]],
        [-1, 1, "C3k2", [1024, True, 0.5, True]] if yolo26 else [-1, 2, "C3k2", [1024, True]],
    ]


# Ultralytics 8.4.190 parse_model: parameters of all rows but the head (Detect)
YOLO11_BODY = {"n": 2_159_168, "s": 8_608_384, "m": 18_641_984}
YOLO26_BODY = {"n": 2_262_624, "m": 18_974_272}
# yolo11-cls / yolo26-cls (same body): rows 0-8 plus a C2PSA row, without Classify
YOLO11_CLS_BODY = {"n": 1_200_864, "m": 9_695_296}


@pytest.mark.parametrize("scale", list(YOLO11_BODY))
def test_yolo11_body_matches_ultralytics_params(scale):
    model = Model(_body(_yolo11_body()), scale=scale)
    assert sum(p.numel() for p in model.parameters()) == YOLO11_BODY[scale]


@pytest.mark.parametrize("scale", list(YOLO26_BODY))
def test_yolo26_body_matches_ultralytics_params(scale):
    model = Model(_body(_yolo11_body(yolo26=True)), scale=scale)
    assert sum(p.numel() for p in model.parameters()) == YOLO26_BODY[scale]
    sppf = model.model[9]
    assert isinstance(sppf.cv1.act, nn.Identity) and sppf.add  # YOLO26's SPPF: unactivated cv1, residual
    assert isinstance(model.model[22].m[0][1], PSABlock)


@pytest.mark.parametrize("scale", list(YOLO11_CLS_BODY))
def test_yolo11_cls_body_matches_ultralytics_params(scale):
    rows = _yolo11_body()[:9] + [[-1, 2, "C2PSA", [1024]]]
    model = Model(_body(rows), scale=scale)
    assert sum(p.numel() for p in model.parameters()) == YOLO11_CLS_BODY[scale]
    assert isinstance(model.model[-1], C2PSA) and len(model.model[-1].m) == 1


def test_declared_strides_match_the_row_outputs():
    rows = [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "C3k2", [32, False, 0.25]], [-1, 1, "Conv", [64, 3, 2]],
            [-1, 2, "C3k2", [64, True]], [-1, 1, "C2PSA", [64]], [-1, 1, "C2fPSA", [64]],
            [-1, 1, "C3k", [64, 48, 1, True, 1, 0.5, 5]]]  # as written, as Ultralytics passes a C3k row
    cfg = _body(rows, scale_rows=False)
    graph = parse_model(resolve_spec(cfg), ch=3)
    assert graph.strides == [2.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]  # every row declares where it sits
    model = Model(cfg).eval()
    x = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        _, kept = model.run_rows(x, keep=tuple(range(len(rows))))
    for i, stride in enumerate(graph.strides):
        assert kept[i].shape[-2:] == (40 / stride, 56 / stride), i
    assert kept[6].shape[1] == 48


@pytest.mark.parametrize("block", [lambda: C3k2(32, 64, 2, c3k=True), lambda: C3k2(128, 128, 1, attn=True),
                                   lambda: C2PSA(128, 128, 2), lambda: C2fPSA(128, 128, 1)],
                         ids=["C3k2-c3k", "C3k2-attn", "C2PSA", "C2fPSA"])
def test_fuse_keeps_outputs(block):
    torch.manual_seed(0)
    module = block()
    randomise_batchnorm(module)
    module.eval()
    x = torch.randn(1, module.cv1.conv.in_channels, 9, 7)
    with torch.no_grad():
        before = module(x)
        fuse_in_place(module)
        after = module(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in module.modules())
    assert (after - before).abs().max() <= 1e-5 * max(1.0, before.abs().max().item())


def test_attention_equals_the_explicit_softmax_formula():
    # Ultralytics' Attention computes softmax((q * scale)^T k) and v @ attn^T; zoo's goes through the
    # fused kernel (with zero-padded keys when key and value widths differ)
    torch.manual_seed(1)
    attn = Attention(128, num_heads=2, attn_ratio=0.5)
    randomise_batchnorm(attn)
    attn.eval()
    x = torch.randn(2, 128, 5, 6)
    with torch.no_grad():
        b, c, h, w = x.shape
        q, k, v = attn.qkv(x).view(b, 2, 2 * attn.key_dim + attn.head_dim, h * w).split(
            [attn.key_dim, attn.key_dim, attn.head_dim], dim=2)
        weights = ((q * attn.key_dim**-0.5).transpose(-2, -1) @ k).softmax(-1)
        mixed = (v @ weights.transpose(-2, -1)).view(b, c, h, w) + attn.pe(v.reshape(b, c, h, w))
        expected = attn.proj(mixed)
        assert torch.allclose(attn(x), expected, atol=1e-5)
    assert math.isclose(attn.scale, 32**-0.5)


def test_psablock_without_shortcut():
    torch.manual_seed(2)
    block = PSABlock(64, num_heads=1, shortcut=False).eval()
    x = torch.randn(1, 64, 4, 4)
    with torch.no_grad():
        assert torch.allclose(block(x), block.ffn(block.attn(x)))
