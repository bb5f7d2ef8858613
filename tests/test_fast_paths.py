"""Fast paths give the same outputs as the plain ones (no timing here: tools/bench_vs_reference.py times them)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import zoo.nn.common as common
from zoo import Model
from zoo.nn.common import Conv, fast_conv, fast_conv_attr

from zoo_test_paths import CFG


@pytest.fixture
def plain_path():
    """Run a block with the fused CPU conv path switched off, restoring the setting afterwards."""
    saved = common.FAST_CPU_CONV

    def run(fn):
        common.FAST_CPU_CONV = False
        try:
            return fn()
        finally:
            common.FAST_CPU_CONV = saved

    yield run
    common.FAST_CPU_CONV = saved


def _rough_norms(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("act", [True, False, nn.ReLU()])
@pytest.mark.parametrize("k,s,g", [(1, 1, 1), (3, 2, 1), (3, 1, 8), (7, 1, 16)])
def test_fused_conv_matches_conv_then_act(act, k, s, g, plain_path):
    torch.manual_seed(0)
    conv = Conv(16, 16, k, s, g=g, act=act).eval()
    conv.fuse()
    x = torch.randn(2, 16, 19, 23)
    with torch.no_grad():
        assert fast_conv_attr(x, conv.conv, conv.act) is not None
        fast = conv(x)
        plain = plain_path(lambda: conv(x))
    assert fast.shape == plain.shape
    assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5)


def test_fast_path_stays_off_for_training_and_other_dtypes():
    conv = Conv(4, 8, 3).eval()
    conv.fuse()
    conv.conv.weight.requires_grad_(True)
    x = torch.randn(1, 4, 8, 8)
    assert fast_conv_attr(x, conv.conv, conv.act) is None  # autograd needs the plain ops
    with torch.no_grad():
        assert fast_conv_attr(x, conv.conv, conv.act) is not None
        assert fast_conv_attr(x.double(), conv.conv, conv.act) is None
        assert fast_conv_attr(x, conv.conv, nn.GELU()) is None


def test_packed_weight_follows_weight_updates():
    conv = Conv(4, 8, 3).eval()
    conv.fuse()
    x = torch.randn(1, 4, 10, 10)
    with torch.no_grad():
        before = fast_conv(x, conv.conv, "swish")
        conv.conv.weight.mul_(2.0)  # in-place change: the packed copy must be rebuilt
        after = fast_conv(x, conv.conv, "swish")
        expected = nn.functional.silu(conv.conv(x))
    assert not torch.allclose(before, after)
    assert torch.allclose(after, expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 3, 128, 128), (2, 3, 96, 160)])
def test_yolov10_deploy_fast_paths_match_plain(shape, plain_path):
    torch.manual_seed(0)
    model = Model(CFG / "yolov10n.yaml", nc=8).eval()
    _rough_norms(model)
    model.deploy()
    x = torch.rand(*shape)
    with torch.no_grad():
        plain, plain_raw = plain_path(lambda: model(x))
        fast, fast_raw = model(x)
        model.to_channels_last()
        last, last_raw = model(x)
        model.to_channels_last(False)
    scale = plain.abs().max()
    assert (fast - plain).abs().max() / scale < 1e-5
    assert (last - plain).abs().max() / scale < 1e-5
    for a, b in zip(last_raw["one2one"], plain_raw["one2one"]):
        assert (a - b).abs().max() < 1e-3


def test_fast_paths_keep_flop_counts_and_training(plain_path):
    model = Model(CFG / "yolov10n.yaml", nc=8).eval()
    fused = copy.deepcopy(model).deploy()
    # the fused CPU call is not used while counting, so fusing changes GFLOPs only by the dropped BN/branch
    gflops = fused.info(imgsz=128, verbose=False)["gflops"]
    plain = plain_path(lambda: fused.info(imgsz=128, verbose=False)["gflops"])
    assert gflops == plain > 0
    model.train()
    out = model(torch.rand(2, 3, 64, 64))
    loss = sum(t.sum() for t in out["one2many"])
    loss.backward()  # unfused Conv modules take the plain path, so gradients flow
    assert model.model[0].conv.weight.grad is not None


def test_rtdetr_fused_fast_paths_match_plain(plain_path):
    # compares the decoder's inputs (the hybrid encoder's P3-P5 maps): its top-k query selection can
    # swap near-tied random-weight queries on a 1e-6 difference, which says nothing about the convs
    torch.manual_seed(0)
    model = Model(CFG / "rtdetr-l.yaml", nc=4).eval()
    _rough_norms(model)
    model.fuse()
    x = torch.rand(1, 3, 128, 128)
    rows = (21, 24, 27)
    with torch.no_grad():
        _, plain = plain_path(lambda: model.run_rows(x, keep=rows))
        _, fast = model.run_rows(x, keep=rows)
        model.to_channels_last()
        _, last = model.run_rows(x.contiguous(memory_format=torch.channels_last), keep=rows)
    for row in rows:
        scale = plain[row].abs().max()
        assert (fast[row] - plain[row]).abs().max() / scale < 1e-5, row
        assert (last[row] - plain[row]).abs().max() / scale < 1e-5, row


def test_fast_conv_accepts_weights_fused_under_inference_mode():
    """fuse() inside torch.inference_mode makes inference tensors, which have no version counter."""
    model = Model(CFG / "yolov10n.yaml").eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        fused = copy.deepcopy(model).fuse()
        fast = fused(x)[0]
    with torch.no_grad():
        plain = model(x)[0]
    assert (fast - plain).abs().max() < 1e-3
