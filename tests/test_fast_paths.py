"""Fast paths give the same outputs as the plain ones (no timing here: tools/bench_vs_reference.py times them)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import zoo.nn.fast_cpu as fast_cpu
from zoo import Model
from zoo.nn.common import Conv
from zoo.nn.fast_cpu import act_attr, conv_act, linear_act, usable

from zoo_test_paths import CFG


@pytest.fixture
def plain_path():
    """Run a block with the fused CPU paths switched off, restoring the setting afterwards."""
    saved = fast_cpu.ENABLED

    def run(fn):
        fast_cpu.ENABLED = False
        try:
            return fn()
        finally:
            fast_cpu.ENABLED = saved

    yield run
    fast_cpu.ENABLED = saved


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
        assert usable(x, conv.conv.weight)
        fast = conv(x)
        plain = plain_path(lambda: conv(x))
    assert fast.shape == plain.shape
    assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5)


def test_fast_path_stays_off_for_training_and_other_dtypes():
    conv = Conv(4, 8, 3).eval()
    conv.fuse()
    conv.conv.weight.requires_grad_(True)
    x = torch.randn(1, 4, 8, 8)
    assert not usable(x, conv.conv.weight)  # autograd needs the plain ops
    with torch.no_grad():
        assert usable(x, conv.conv.weight)
        assert not usable(x.double(), conv.conv.weight)
        assert not usable(x, conv.conv.weight.double())
    assert act_attr(nn.GELU()) == ("gelu", "none") and act_attr(nn.GELU(approximate="tanh")) == ("gelu", "tanh")
    assert act_attr(nn.Hardswish()) is None  # no post-op for it: conv_act falls back to the plain ops


def test_packed_weight_follows_weight_updates():
    conv = Conv(4, 8, 3).eval()
    conv.fuse()
    x = torch.randn(1, 4, 10, 10)
    with torch.no_grad():
        before = conv_act(x, conv.conv, nn.SiLU())
        conv.conv.weight.mul_(2.0)  # in-place change: the packed copy must be rebuilt
        after = conv_act(x, conv.conv, nn.SiLU())
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
        _, plain_raw = plain_path(lambda: model(x))
        _, fast_raw = model(x)
        model.to_channels_last()
        _, last_raw = model(x)
        model.to_channels_last(False)
    plain, fast, last = plain_raw["decoded"], fast_raw["decoded"], last_raw["decoded"]
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
        fast = fused(x)[1]["decoded"]
    with torch.no_grad():
        plain = model(x)[1]["decoded"]
    assert (fast - plain).abs().max() < 1e-3


@pytest.mark.parametrize("act", [None, nn.GELU(), nn.GELU(approximate="tanh"), nn.ReLU(), nn.SiLU()])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_act_matches_linear_then_act(act, bias, plain_path):
    torch.manual_seed(0)
    linear = nn.Linear(24, 40, bias=bias)
    tall = fast_cpu.CONV_GEMM_MIN_ROWS  # from here on the rows run as a 1x1 conv with a packed weight
    for shape in [(7, 24), (2, 5, 24), (2, 3, 4, 24), (tall, 24), (2, tall // 2 + 3, 24), (tall + 77, 24)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            fast = linear_act(x, linear, act)
            plain = plain_path(lambda: linear_act(x, linear, act))
            expected = linear(x) if act is None else act(linear(x))
        assert torch.equal(plain, expected)
        assert fast.shape == plain.shape
        assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5)
    y = linear_act(torch.randn(3, 24, requires_grad=True), linear, act)
    assert y.grad_fn is not None  # with autograd the plain ops run


def test_tall_linear_follows_weight_updates_and_strided_inputs(plain_path):
    """The packed 1x1-conv weight of a tall linear is re-packed when the weight changes; a strided
    input takes the linear kernel."""
    torch.manual_seed(0)
    linear = nn.Linear(32, 48)
    x = torch.randn(fast_cpu.CONV_GEMM_MIN_ROWS + 5, 32)
    with torch.no_grad():
        linear_act(x, linear)
        linear.weight.mul_(-2.0)
        assert torch.allclose(linear_act(x, linear), linear(x), atol=1e-4, rtol=1e-4)
        strided = torch.randn(32, fast_cpu.CONV_GEMM_MIN_ROWS + 5).t()
        assert torch.allclose(linear_act(strided, linear), linear(strided), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("act", [nn.GELU(), None])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_conv_act_gelu_and_biasless(act, layout, plain_path):
    torch.manual_seed(0)
    for conv in (nn.Conv2d(8, 16, 3, 1, 1), nn.Conv2d(8, 16, 1, bias=False), nn.Conv2d(8, 8, 3, 2, 1, groups=8)):
        x = torch.randn(2, 8, 13, 17).contiguous(memory_format=layout)
        with torch.no_grad():
            fast = conv_act(x, conv, act)
            plain = plain_path(lambda: conv_act(x, conv, act))
        assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5)


def test_mobile_sam_fast_paths_match_plain(plain_path):
    """TinyViT encoder (conv+GELU, linear+GELU, 4-D attention bias) and the SAM head, fused, both layouts."""
    torch.manual_seed(0)
    model = Model(CFG / "sam-tinyvit.yaml").eval()
    _rough_norms(model)
    model.fuse()
    x = torch.randn(1, 3, 128, 160)
    box = torch.tensor([[[20.0, 30.0, 90.0, 100.0]]])
    with torch.no_grad():
        plain = plain_path(lambda: model(x, boxes=box))
        fast = model(x, boxes=box)
        model.to_channels_last()
        last = model(x.contiguous(memory_format=torch.channels_last), boxes=box)
    for got in (fast, last):
        for a, b in zip(got, plain):
            assert (a - b).abs().max() / b.abs().max().clamp(min=1e-6) < 1e-4


def test_stem_pool_shortcut_matches_max_pool():
    from zoo.nn.rtdetr import max_pool_2x2_stride1

    pool = nn.MaxPool2d(2, stride=1, padding=0, ceil_mode=True)
    for x in (torch.randn(2, 3, 7, 9), torch.randn(1, 8, 12, 10).contiguous(memory_format=torch.channels_last)):
        assert torch.equal(max_pool_2x2_stride1(x), pool(x))


def test_rtdetr_transformer_fast_paths_match_plain(plain_path):
    """AIFI and a deformable decoder layer with oneDNN linears vs plain ops, on random inputs (the
    whole model is not compared end to end: its top-k query selection can swap near-tied queries)."""
    from zoo.nn.rtdetr import AIFI
    from zoo.nn.rtdetr_decoder import DeformableDecoderLayer

    torch.manual_seed(0)
    aifi = AIFI(64, 128, 4).eval()
    layer = DeformableDecoderLayer(64, 4, 128, n_levels=2, n_points=3).eval()
    nn.init.normal_(layer.cross_attn.sampling_offsets.weight, std=0.05)  # points off the initial ring
    nn.init.normal_(layer.cross_attn.attention_weights.weight, std=0.05)
    x = torch.randn(1, 64, 6, 5)
    shapes = [(8, 8), (4, 4)]
    embed, ref, feats = torch.randn(2, 10, 64), torch.rand(2, 10, 4), torch.randn(2, 80, 64)
    pos = torch.randn(2, 10, 64)
    with torch.no_grad():
        pairs = [(aifi(x), plain_path(lambda: aifi(x))),
                 (layer(embed, ref, feats, shapes, None, pos), plain_path(lambda: layer(embed, ref, feats, shapes, None, pos)))]
    for fast, plain in pairs:
        assert fast.shape == plain.shape
        assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-4)


def test_rtdetr_head_fuse_and_encoder_scores_match_plain(plain_path):
    """The head's input projections with BatchNorm folded in, and its candidate scoring through the
    oneDNN linears, against the unfused head on the plain path (before any top-k selection)."""
    torch.manual_seed(0)
    model = Model(CFG / "rtdetr-l.yaml", nc=4).eval()
    _rough_norms(model)
    head, inputs = model.head, model.records[-1].inputs
    x = torch.rand(1, 3, 128, 128)

    def encoder_side():
        _, kept = model.run_rows(x, keep=inputs)
        feats, shapes = head._encoder_input([kept[i] for i in inputs])
        _, valid = head._anchors_for(shapes, feats)
        return (feats, *head.encoder_scores(feats, valid))

    with torch.no_grad():
        plain = plain_path(encoder_side)
        model.fuse()
        assert all(len(proj) == 1 for proj in head.input_proj)
        fused = encoder_side()
    for a, b in zip(plain, fused):
        assert (a - b).abs().max() / a.abs().max() < 1e-5


def test_channels_last_model_takes_images_as_given():
    """No conversion of a 3-channel image: the first conv (channels-last weights) writes NHWC itself."""
    torch.manual_seed(0)
    model = Model(CFG / "yolov10n.yaml").eval()
    _rough_norms(model)
    model.deploy()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)[1]["decoded"]
        model.to_channels_last()
        first_row = model.run_rows(x, keep=(0,))[1][0]
        given = model(x)[1]["decoded"]
        converted = model(x.contiguous(memory_format=torch.channels_last))[1]["decoded"]
    assert first_row.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(given, expected, rtol=1e-4, atol=1e-4)
    assert torch.allclose(given, converted, rtol=1e-4, atol=1e-4)


def test_tall_linear_packed_weights_go_with_their_layer():
    import gc

    linear = nn.Linear(16, 8)
    with torch.no_grad():
        linear_act(torch.randn(fast_cpu.CONV_GEMM_MIN_ROWS, 16), linear)
    assert id(linear.weight) in fast_cpu._PACKED_LINEAR
    key = id(linear.weight)
    del linear
    gc.collect()
    assert key not in fast_cpu._PACKED_LINEAR


@pytest.mark.parametrize("dk,dv", [(32, 64), (48, 16)])
def test_attention_with_unequal_head_dims_matches_unfused(dk, dv):
    """q/k and v of different head dims are zero-padded to one width for the fused CPU kernel: same
    output and gradients as the math kernel, and FLOP counts stay those of the unpadded matmuls."""
    from torch.utils.flop_counter import FlopCounterMode

    from zoo.nn.common import attention

    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 50, dk, requires_grad=True), torch.randn(2, 3, 40, dk, requires_grad=True)
    v = torch.randn(2, 3, 40, dv, requires_grad=True)
    bias = torch.randn(50, 40)
    upstream = torch.randn(2, 3, 50, dv)
    for scale in (None, 0.3):  # None: 1/sqrt of the keys' own width, not of the padded one
        results = []
        for run in (lambda: attention(q, k, v, bias, scale=scale), lambda: _math_attention(q, k, v, bias, scale)):
            out = run()
            results.append((out, *torch.autograd.grad((out * upstream).sum(), (q, k, v))))
        for got, ref in zip(*results):
            assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-5)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        attention(q, k, v)
    assert counter.get_total_flops() == 2 * 2 * 3 * 50 * 40 * (dk + dv)


def _math_attention(q, k, v, bias, scale):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return ((q @ k.transpose(-2, -1)) * scale + bias).softmax(-1) @ v
