"""YOLOv9 blocks: Ultralytics 8.4 parameter counts and key names, shapes, strides, wiring errors, fusing.

The counts below were measured with Ultralytics 8.4.190 (tests cannot import it): per block for the
constructor args given, and per row for YOLOv9t's rows without its Detect head and for a small
YOLOv9e-style model with the CBLinear / CBFuse auxiliary branch.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import zoo.nn.yolov9 as v9
from zoo import Model
from zoo.builder import parse_model
from zoo.config import resolve_spec
from zoo.errors import ConfigError
from zoo.nn.rtdetr import RepConv

from batchnorm_stats import fuse_in_place, randomise_batchnorm

# (block, constructor args, Ultralytics 8.4 parameter count)
BLOCK_PARAMS = [
    ("RepConvN", (8, 16), {}, 1344),
    ("RepConvN", (8, 8), {"bn": True}, 688),
    ("RepConvN", (8, 16, 3, 2), {}, 1344),
    ("RepConvN", (8, 8, 3, 1, 1, 2), {"bn": True}, 368),
    ("RepBottleneck", (16, 16), {}, 2496),
    ("RepBottleneck", (8, 16, False, 1, (3, 1), 1.0), {}, 1632),
    ("RepCSP", (16, 24, 2), {}, 6672),
    ("RepCSP", (16, 16, 1, False, 2, 0.75), {}, 3008),
    ("RepNCSPELAN4", (16, 32, 32, 16, 1), {}, 11040),
    ("RepNCSPELAN4", (24, 40, 30, 24, 2), {}, 27956),
    ("RepNCSPELAN4", (24, 40, 17, 8, 3), {}, 5314),
    ("ELAN1", (16, 32, 32, 16), {}, 7360),
    ("ELAN1", (24, 40, 17, 8), {}, 3026),
    ("AConv", (16, 24), {}, 3504),
    ("ADown", (16, 24), {}, 1008),
    ("ADown", (32, 64), {}, 5248),
    ("SPPELAN", (32, 48, 16), {}, 3712),
    ("SPPELAN", (32, 48, 8, 3), {}, 1904),
    ("CBLinear", (16, [8, 16, 24]), {}, 816),
    ("CBLinear", (16, [4, 12], 3, 2, None, 2), {}, 1168),
]

# Ultralytics' state-dict layout: (block, args, number of keys, modules that hold tensors)
BLOCK_KEYS = [
    ("RepConvN", (8, 8), {"bn": True}, 17, {"bn", "conv1.bn", "conv1.conv", "conv2.bn", "conv2.conv"}),
    ("RepBottleneck", (16, 16), {}, 18,
     {"cv1.conv1.bn", "cv1.conv1.conv", "cv1.conv2.bn", "cv1.conv2.conv", "cv2.bn", "cv2.conv"}),
    ("RepCSP", (16, 24, 2), {}, 54,
     {"cv1.bn", "cv1.conv", "cv2.bn", "cv2.conv", "cv3.bn", "cv3.conv"}
     | {f"m.{i}.{p}" for i in (0, 1) for p in ("cv1.conv1.bn", "cv1.conv1.conv", "cv1.conv2.bn", "cv1.conv2.conv",
                                              "cv2.bn", "cv2.conv")}),
    ("RepNCSPELAN4", (16, 32, 32, 16, 1), {}, 96,
     {"cv1.bn", "cv1.conv", "cv4.bn", "cv4.conv"}
     | {f"{b}.{p}" for b in ("cv2", "cv3") for p in (
         "0.cv1.bn", "0.cv1.conv", "0.cv2.bn", "0.cv2.conv", "0.cv3.bn", "0.cv3.conv", "0.m.0.cv1.conv1.bn",
         "0.m.0.cv1.conv1.conv", "0.m.0.cv1.conv2.bn", "0.m.0.cv1.conv2.conv", "0.m.0.cv2.bn", "0.m.0.cv2.conv",
         "1.bn", "1.conv")}),
    ("ELAN1", (16, 32, 32, 16), {}, 24, {f"cv{i}.{p}" for i in (1, 2, 3, 4) for p in ("bn", "conv")}),
    ("AConv", (16, 24), {}, 6, {"cv1.bn", "cv1.conv"}),
    ("ADown", (16, 24), {}, 12, {"cv1.bn", "cv1.conv", "cv2.bn", "cv2.conv"}),
    ("SPPELAN", (32, 48, 16), {}, 12, {"cv1.bn", "cv1.conv", "cv5.bn", "cv5.conv"}),
    ("CBLinear", (16, [8, 16, 24]), {}, 2, {"conv"}),
]

# YOLOv9t's rows (Ultralytics' yolov9t.yaml) without the Detect row, and Ultralytics' per-row counts
YOLOV9T_BODY = {"nc": 80, "backbone": [
    [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "ELAN1", [32, 32, 16]],
    [-1, 1, "AConv", [64]], [-1, 1, "RepNCSPELAN4", [64, 64, 32, 3]], [-1, 1, "AConv", [96]],
    [-1, 1, "RepNCSPELAN4", [96, 96, 48, 3]], [-1, 1, "AConv", [128]], [-1, 1, "RepNCSPELAN4", [128, 128, 64, 3]],
    [-1, 1, "SPPELAN", [128, 64]],
], "head": [
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 6], 1, "Concat", [1]], [-1, 1, "RepNCSPELAN4", [96, 96, 48, 3]],
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 4], 1, "Concat", [1]], [-1, 1, "RepNCSPELAN4", [64, 64, 32, 3]],
    [-1, 1, "AConv", [48]], [[-1, 12], 1, "Concat", [1]], [-1, 1, "RepNCSPELAN4", [96, 96, 48, 3]],
    [-1, 1, "AConv", [64]], [[-1, 9], 1, "Concat", [1]], [-1, 1, "RepNCSPELAN4", [128, 128, 64, 3]],
]}
YOLOV9T_ROW_PARAMS = [464, 4672, 7872, 18560, 65216, 55488, 145824, 110848, 258432, 41344, 0, 0, 158112, 0, 0,
                      71360, 27744, 0, 150432, 55424, 0, 266624]
YOLOV9T_BODY_PARAMS = {1.0: 1_438_416, 0.5: 1_092_472}  # by width_multiple

# a small YOLOv9e-style model: an identity input row, a main branch, and an auxiliary branch whose
# CBLinear maps are added (CBFuse) into the second backbone at several strides
PGI_MINI = {"nc": 3, "backbone": [
    [-1, 1, "nn.Identity", []],
    [-1, 1, "Conv", [16, 3, 2]],
    [-1, 1, "ELAN1", [32, 32, 16]],
    [-1, 1, "ADown", [32]],
    [-1, 1, "RepNCSPELAN4", [48, 32, 16, 1]],
    [-1, 1, "AConv", [64]],
    [-1, 1, "SPPELAN", [64, 32]],
    [2, 1, "CBLinear", [[16, 32]]],
    [6, 1, "CBLinear", [[16, 32, 48]]],
    [0, 1, "Conv", [16, 3, 2]],
    [[7, 8, -1], 1, "CBFuse", [[0, 0]]],
    [-1, 1, "ADown", [32]],
    [[7, 8, -1], 1, "CBFuse", [[1, 1]]],
    [-1, 1, "RepNCSPELAN4", [48, 48, 24, 2]],
    [-1, 1, "AConv", [48]],
    [[8, -1], 1, "CBFuse", [[2]]],
]}
PGI_MINI_ROW_PARAMS = [0, 464, 7360, 2624, 12608, 27776, 10432, 1584, 6240, 464, 0, 1344, 0, 30528, 20832, 0]
PGI_MINI_STRIDES = [1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 8.0, [2.0, 2.0], [8.0, 8.0, 8.0], 2.0, 2.0, 4.0, 4.0, 4.0, 8.0, 8.0]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name,args,kwargs,params", BLOCK_PARAMS)
def test_block_params_match_ultralytics(name, args, kwargs, params) -> None:
    assert _params(getattr(v9, name)(*args, **kwargs)) == params


@pytest.mark.parametrize("name,args,kwargs,n_keys,holders", BLOCK_KEYS)
def test_state_dict_keys_follow_ultralytics(name, args, kwargs, n_keys, holders) -> None:
    keys = getattr(v9, name)(*args, **kwargs).state_dict().keys()
    assert len(keys) == n_keys
    assert {k.rsplit(".", 1)[0] for k in keys} == holders


@pytest.mark.parametrize("name,args,kwargs,params", BLOCK_PARAMS)
def test_fuse_keeps_outputs(name, args, kwargs, params) -> None:
    torch.manual_seed(0)
    block = getattr(v9, name)(*args, **kwargs)
    randomise_batchnorm(block)
    block.eval()
    x = torch.randn(2, args[0], 17, 14)  # odd sizes: the downsamplers' padding and pooling edges count
    with torch.no_grad():
        before = block(x)
        fuse_in_place(block)
        after = block(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    before, after = (before, after) if isinstance(before, list) else ([before], [after])
    for b, a in zip(before, after):
        assert b.shape == a.shape
        assert (b - a).abs().max() < 1e-5


@pytest.mark.parametrize("name,args,expected", [
    ("RepNCSPELAN4", (16, 32, 32, 16, 1), (32, 17, 14)),
    ("ELAN1", (16, 40, 17, 8), (40, 17, 14)),
    ("SPPELAN", (16, 24, 8, 3), (24, 17, 14)),
    ("AConv", (16, 24), (24, 8, 7)),  # 2x2 average to 16x13, then a 3x3 stride-2 conv
    ("ADown", (16, 24), (24, 8, 7)),
    ("RepConvN", (16, 8, 3, 2), (8, 9, 7)),
])
def test_output_shapes(name, args, expected) -> None:
    with torch.no_grad():
        y = getattr(v9, name)(*args).eval()(torch.randn(1, args[0], 17, 14))
    assert tuple(y.shape[1:]) == expected


def test_repconvn_is_rtdetr_repconv_and_fuses_to_one_conv() -> None:
    block = v9.RepConvN(8, 8, bn=True)
    assert isinstance(block, RepConv)
    block.fuse()
    assert isinstance(block.conv, nn.Conv2d) and block.conv.kernel_size == (3, 3)
    assert not hasattr(block, "conv1") and not hasattr(block, "bn")


def test_cblinear_splits_one_conv() -> None:
    block = v9.CBLinear(6, [2, 3, 5], k=3, s=2)
    x = torch.randn(1, 6, 9, 9)
    outs = block(x)
    full = block.conv(x)
    assert [o.shape[1] for o in outs] == [2, 3, 5] and outs[0].shape[2:] == (5, 5)
    assert torch.equal(torch.cat(outs, 1), full)


def test_cbfuse_adds_resized_picks_to_the_last_input() -> None:
    torch.manual_seed(0)
    coarse = [torch.randn(1, 4, 2, 3), torch.randn(1, 2, 2, 3)]
    fine = [torch.randn(1, 2, 8, 12)]
    target = torch.randn(1, 2, 4, 6)
    out = v9.CBFuse([1, 0])([coarse, fine, target])
    # nearest resizing by integer factors repeats (upsampling) or strides (downsampling)
    up = coarse[1].repeat_interleave(2, 2).repeat_interleave(2, 3)
    down = fine[0][..., ::2, ::2]
    assert torch.allclose(out, target + up + down)


def _body(width: float = 1.0) -> dict:
    cfg = copy.deepcopy(YOLOV9T_BODY)
    cfg["width_multiple"] = width
    return cfg


def test_yolov9t_rows_match_ultralytics_counts() -> None:
    model = Model(_body())
    assert [r.params for r in model.records] == YOLOV9T_ROW_PARAMS
    assert _params(model) == YOLOV9T_BODY_PARAMS[1.0]
    assert [r.out_channels for r in model.records][-7:] == [64, 48, 144, 96, 64, 192, 128]


def test_width_scales_only_the_first_arg() -> None:
    model = Model(_body(0.5))
    assert _params(model) == YOLOV9T_BODY_PARAMS[0.5]
    assert model.records[4].args == (32, 32, 64, 32, 3)  # c2 64 -> 32; c3, c4 and n as written


def test_pgi_branch_counts_strides_and_outputs() -> None:
    graph = parse_model(resolve_spec(PGI_MINI))
    assert graph.strides == PGI_MINI_STRIDES  # every row declares its spatial rule: no trial run needed
    model = Model(PGI_MINI).eval()
    assert [r.params for r in model.records] == PGI_MINI_ROW_PARAMS
    assert model.records[8].out_channels == [16, 32, 48]
    assert model.records[8].args == (64, [16, 32, 48])
    assert model.records[12].out_channels == 32
    with torch.no_grad():
        out, kept = model.run_rows(torch.randn(1, 3, 64, 48), keep=(7, 8, 12))
    assert [tuple(t.shape) for t in kept[8]] == [(1, 16, 8, 6), (1, 32, 8, 6), (1, 48, 8, 6)]
    assert tuple(kept[12].shape) == (1, 32, 16, 12)
    assert tuple(out.shape) == (1, 48, 8, 6)


def test_silence_is_an_identity_row() -> None:
    cfg = copy.deepcopy(PGI_MINI)
    cfg["backbone"][0] = [-1, 1, "Silence", []]
    assert [r.params for r in Model(cfg).records] == PGI_MINI_ROW_PARAMS


def _with_row(index: int, row: list) -> dict:
    cfg = copy.deepcopy(PGI_MINI)
    cfg["backbone"][index] = row
    return cfg


@pytest.mark.parametrize("index,row,message", [
    (10, [[7, 8, -1], 1, "CBFuse", [[1, 0]]], "has 32 channels, the map it is added to has 16"),
    (10, [[7, 8, -1], 1, "CBFuse", [[0]]], "gives 1 output indices for 2 CBLinear rows"),
    (10, [[7, 8, -1], 1, "CBFuse", [[0, 3]]], "index 3 for input 1 is out of range"),
    (10, [[1, 9], 1, "CBFuse", [[0]]], "then one plain map"),  # a plain map to pick from
    (10, [[7, 8], 1, "CBFuse", [[0]]], "then one plain map"),  # no plain map to add to
    (7, [2, 1, "CBLinear", [16]], "a list of output channel counts first"),
    (7, [2, 2, "CBLinear", [[16, 32]]], "set its repeats to 1"),
    (3, [-1, 1, "ADown", [32, 7]], "signature"),
])
def test_wiring_errors_name_the_row(index, row, message) -> None:
    with pytest.raises(ConfigError, match="row " + str(index)) as err:
        Model(_with_row(index, row))
    assert message in str(err.value)


def test_adown_refuses_odd_channels() -> None:
    with pytest.raises(ConfigError, match="row 1.*even c1, c2"):
        Model({"nc": 3, "backbone": [[-1, 1, "nn.Conv2d", [15, 1]], [-1, 1, "ADown", [16]]]})


def test_model_fuse_folds_every_repconvn() -> None:
    torch.manual_seed(0)
    model = Model(PGI_MINI).eval()
    randomise_batchnorm(model)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        before = model(x)
        model.fuse()
        after = model(x)
    reps = [m for m in model.modules() if isinstance(m, v9.RepConvN)]
    assert reps and all(m.conv is not None and not hasattr(m, "conv1") for m in reps)
    assert (before - after).abs().max() < 1e-5


def test_rows_ultralytics_does_not_wire_take_their_args_as_written() -> None:
    """RepCSP / RepBottleneck / RepConvN rows: c1 written, nothing width-scaled (as Ultralytics' parse_model
    passes them), and the builder still knows their output channels."""
    from zoo import Model

    cfg = {"nc": 2, "scales": {"n": [0.33, 0.25, 1024]}, "backbone": [
        [-1, 1, "Conv", [64, 3, 2]],  # 16 channels after width 0.25
        [-1, 1, "RepCSP", [16, 24, 2]], [-1, 1, "RepBottleneck", [24, 24]], [-1, 1, "RepConvN", [24, 8, 3, 2]],
        [-1, 1, "Conv", [32, 1, 1]]]}
    model = Model(cfg)
    assert [r.out_channels for r in model.records] == [16, 24, 24, 8, 8]
    assert model.records[1].args == (16, 24, 2) and model.records[3].args == (24, 8, 3, 2)
    assert sum(p.numel() for p in model.model[1].parameters()) == 6672  # Ultralytics' RepCSP(16, 24, 2)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 8, 8, 8)
