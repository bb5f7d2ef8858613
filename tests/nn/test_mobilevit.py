"""MobileViT v1/v2 rows and the whole-backbone row: timm parameter parity, fixture parity, sizes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zoo import Model
from zoo.nn.mobilevit import MobileViTBackbone, MobileViTBlock
from zoo.nn.mobilevit_v2 import LinearSelfAttention, MobileViTBlockV2

from zoo_test_paths import CFG, FIXTURES, build_small as build


# timm 1.0.31, num_classes=1000
TIMM_PARAMS = {
    "mobilevit-xxs": 1_272_024, "mobilevit-xs": 2_317_848, "mobilevit-s": 5_578_632,
    "mobilevitv2-050": 1_370_593, "mobilevitv2-075": 2_866_009, "mobilevitv2-100": 4_901_841,
    "mobilevitv2-125": 7_478_089, "mobilevitv2-150": 10_594_753, "mobilevitv2-175": 14_251_833,
    "mobilevitv2-200": 18_449_329,
}


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_param_count_matches_timm(name: str) -> None:
    model = build(f"{name}-cls.yaml")
    assert sum(p.numel() for p in model.parameters()) == TIMM_PARAMS[name]
    assert model.task == "classify"


@pytest.mark.parametrize("variant,timm_name", [("xxs", "mobilevit-xxs"), ("s", "mobilevit-s"), ("v2_050", "mobilevitv2-050"),
                                               ("v2_175", "mobilevitv2-175")])
def test_backbone_row_has_the_stage_rows_parameters(variant: str, timm_name: str) -> None:
    backbone = MobileViTBackbone(3, variant)
    head = build(f"{timm_name}-cls.yaml").model[-1].fc
    assert sum(p.numel() for p in backbone.parameters()) + sum(p.numel() for p in head.parameters()) == TIMM_PARAMS[timm_name]


def _load_fixture(name: str) -> tuple[Path, dict[str, torch.Tensor]]:
    folder = FIXTURES / name
    if not folder.exists():
        pytest.skip("fixtures not present")
    return folder / "state_dict.pt", torch.load(folder / "io.pt", weights_only=True)


@pytest.mark.parametrize("fixture,cfg", [("mobilevit_xxs", "mobilevit-xxs"), ("mobilevitv2_050", "mobilevitv2-050")])
def test_timm_fixture_through_model_load(fixture: str, cfg: str, capsys: pytest.CaptureFixture) -> None:
    weights, io = _load_fixture(fixture)
    model = Model(CFG / f"{cfg}-cls.yaml").eval()
    report = model.load(weights)
    printed = capsys.readouterr().out
    assert "Transferred" in printed and "timm MobileViT" in printed  # the transfer report is printed
    assert report.ok and not report.skipped and len(report.loaded) == len(model.state_dict())
    with torch.no_grad():
        logits, kept = model.run_rows(io["input"], keep=(8,))
        features = model.model[9].features(kept[8])
    feat_err = (features - io["features"]).abs().max().item()
    logit_err = (logits - io["logits"]).abs().max().item()
    with capsys.disabled():
        print(f"\n{fixture}: features max abs err {feat_err:.3g}, logits {logit_err:.3g}")
    assert feat_err <= 1e-4 and logit_err <= 1e-3


def test_backbone_row_loads_timm_weights_and_feeds_index_rows() -> None:
    weights, io = _load_fixture("mobilevit_xxs")
    cfg = {
        "nc": 1000,
        "backbone": [[-1, 1, "MobileViTBackbone", ["xxs"]]],
        "head": [[0, 1, "Index", [3]], [-1, 1, "ClassifierHead", ["nc"]]],
    }
    model = Model(cfg).eval()
    assert model.records[0].out_channels == [24, 48, 64, 320]
    assert model.records[1].out_channels == 320
    report = model.load(weights, verbose=False)
    assert report.ok and not report.skipped
    with torch.no_grad():
        logits, kept = model.run_rows(io["input"], keep=(1,))
    assert (kept[1] - io["features"]).abs().max() <= 1e-4
    assert (logits - io["logits"]).abs().max() <= 1e-3


@pytest.mark.parametrize("variant", ["s", "v2_100"])
def test_backbone_outputs_p2_to_p5(variant: str) -> None:
    backbone = MobileViTBackbone(3, variant).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 320, 256))
    assert [o.shape[1] for o in outs] == backbone.out_channels
    assert [tuple(o.shape[2:]) for o in outs] == [(80, 64), (40, 32), (20, 16), (10, 8)]
    if variant == "s":
        assert backbone.out_channels == [64, 96, 128, 640]  # the seed's mobile_vit_small width_list


@pytest.mark.parametrize("cfg", ["mobilevit-xxs-cls.yaml", "mobilevitv2-050-cls.yaml"])
def test_classifiers_run_at_multiples_of_32(cfg: str) -> None:
    model = build(cfg).eval()
    with torch.no_grad():
        for size in [(224, 224), (288, 160), (96, 96)]:
            assert model(torch.randn(1, 3, *size)).shape == (1, 1000)


def test_blocks_resize_maps_that_do_not_divide_by_the_patch() -> None:
    with torch.no_grad():
        v1 = MobileViTBlock(32, 48, depth=1, head_dim=16, patch=2).eval()
        assert v1(torch.randn(1, 32, 7, 9)).shape == (1, 32, 7, 9)  # resized back, as the reference does
        v2 = MobileViTBlockV2(32, 16, depth=1, patch=2).eval()
        assert v2(torch.randn(1, 32, 7, 9)).shape == (1, 32, 8, 10)  # v2 keeps the rounded-up size


def test_linear_self_attention_matches_its_definition() -> None:
    torch.manual_seed(0)
    attn = LinearSelfAttention(8).eval()
    x = torch.randn(2, 8, 4, 10)  # (B, C, P, N)
    with torch.no_grad():
        q, k, v = attn.qkv_proj(x).split([1, 8, 8], dim=1)
        got = attn(x)
        want = torch.zeros_like(x)
        for b in range(2):
            for p in range(4):
                weights = torch.softmax(q[b, 0, p], dim=0)  # over the N patches
                context = (k[b, :, p] * weights).sum(-1)  # (C,)
                want[b, :, p] = torch.relu(v[b, :, p]) * context[:, None]
        want = attn.out_proj(want)
    assert (got - want).abs().max() < 1e-5


@pytest.mark.parametrize("family", ["mobilevit-cls.yaml", "mobilevitv2-cls.yaml"])
def test_family_scales_build_and_run(family: str) -> None:
    for scale in "nsml":
        model = build(family, scale=scale).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 64, 96)).shape == (1, 1000)


def test_mobilevit_block_row_gflops_include_attention() -> None:
    from zoo.summary import profile_rows

    c1, dim, depth, head_dim, heads = 32, 48, 2, 16, 3
    model = Model({"backbone": [[-1, 1, "ConvBNAct", [c1, 3, 2]],
                                [-1, depth, "MobileViTBlock", [dim, head_dim, 2]]]})
    stats = profile_rows(model, (64, 96))  # 32x48 map -> 2x2 patches: 4 sequences of 16x24 tokens
    pixels, seq, n = 32 * 48, 4, 16 * 24
    per_layer = (
        pixels * dim * 3 * dim  # qkv (every pixel is a token)
        + 2 * seq * heads * n * n * head_dim  # q @ k^T and softmax(..) @ v
        + pixels * dim * dim  # proj
        + 2 * pixels * dim * 2 * dim  # mlp, ratio 2
    )
    macs = (
        pixels * c1 * c1 * 9  # local 3x3
        + pixels * c1 * dim  # 1x1 to dim
        + depth * per_layer
        + pixels * dim * c1  # 1x1 back
        + pixels * 2 * c1 * c1 * 9  # 3x3 fusion
    )
    attention_macs = depth * 2 * seq * heads * n * n * head_dim
    assert stats[1].gflops * 1e9 == pytest.approx(2 * macs, rel=1e-9)
    assert attention_macs / macs > 0.2  # a counter that skipped attention would be far off


@pytest.mark.parametrize("fixture,cfg", [("mobilevit_xxs", "mobilevit-xxs"), ("mobilevitv2_050", "mobilevitv2-050")])
def test_fuse_keeps_logits(fixture: str, cfg: str) -> None:
    weights, io = _load_fixture(fixture)
    model = build(f"{cfg}-cls.yaml").eval()
    model.load(weights, verbose=False)
    with torch.no_grad():
        before = model(io["input"])
        model.fuse().fuse()  # idempotent
        after = model(io["input"])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert (before - after).abs().max() < 1e-4
