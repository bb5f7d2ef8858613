"""TinyViT rows: parameter parity with timm, timm fixture parity, window padding, bias tables."""
from __future__ import annotations

import itertools

import pytest
import torch

from zoo import Model
from zoo.nn.tiny_vit import BasicLayer, PatchMerging, TinyViTAttention, TinyViTBlock, window_bias_index

from zoo_test_paths import FIXTURES, build_small as build


# timm 1.0.31, num_classes=1000
TIMM_PARAMS = {"5m": 5_392_764, "11m": 10_996_972, "21m": 21_198_568}


@pytest.mark.parametrize("variant", sorted(TIMM_PARAMS))
def test_param_count_matches_timm(variant: str) -> None:
    model = build(f"tinyvit-{variant}-cls.yaml")
    assert sum(p.numel() for p in model.parameters()) == TIMM_PARAMS[variant]
    assert model.task == "classify"


def _reference_bias_index(window: int) -> torch.Tensor:
    """The reference's construction: number each |offset| in the order it is first met."""
    points = list(itertools.product(range(window), range(window)))
    seen: dict[tuple[int, int], int] = {}
    idx = []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            seen.setdefault(off, len(seen))
            idx.append(seen[off])
    return torch.tensor(idx).view(len(points), len(points))


@pytest.mark.parametrize("window", [1, 3, 7, 14])
def test_bias_index_matches_reference_order(window: int) -> None:
    assert torch.equal(window_bias_index(window), _reference_bias_index(window))


def _naive_window_attention(attn: TinyViTAttention, x: torch.Tensor) -> torch.Tensor:
    """Pad, loop over windows, explicit softmax with the reference bias index."""
    b, c, h, w = x.shape
    win = attn.window
    hp, wp = -(-h // win) * win, -(-w // win) * win
    xp = torch.zeros(b, c, hp, wp)
    xp[:, :, :h, :w] = x
    out = torch.zeros_like(xp)
    bias = attn.attention_biases[:, _reference_bias_index(win)]
    for bi, i, j in itertools.product(range(b), range(0, hp, win), range(0, wp, win)):
        t = xp[bi, :, i:i + win, j:j + win].reshape(c, -1).T  # (L, C) row-major in the window
        qkv = attn.qkv(attn.norm(t)).view(win * win, attn.heads, 3, attn.head_dim)
        q, k, v = qkv.unbind(2)  # (L, heads, d)
        logits = torch.einsum("qhd,khd->hqk", q, k) * attn.head_dim ** -0.5 + bias
        y = torch.einsum("hqk,khd->qhd", logits.softmax(-1), v).reshape(win * win, -1)
        out[bi, :, i:i + win, j:j + win] = attn.proj(y).T.reshape(c, win, win)
    return out[:, :, :h, :w]


@pytest.mark.parametrize("size", [(7, 7), (9, 12), (5, 16)])
def test_window_attention_matches_naive_loop_with_padding(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    attn = TinyViTAttention(64, head_dim=16, window=7).eval()
    with torch.no_grad():
        attn.attention_biases.normal_()  # make every offset's bias matter
        attn.qkv.weight.normal_(std=0.3)
        x = torch.randn(2, 64, *size)
        got, want = attn(x), _naive_window_attention(attn, x)
    assert got.shape == x.shape
    assert (got - want).abs().max() < 1e-5


def test_bias_table_does_not_depend_on_image_size() -> None:
    block = TinyViTBlock(64, head_dim=32, window=7).eval()
    shapes = {k: v.shape for k, v in block.state_dict().items()}
    assert shapes["attn.attention_biases"] == (2, 49)
    assert "attn.attention_bias_idxs" not in shapes  # non-persistent: rebuilt from the window size
    with torch.no_grad():
        for hw in [(56, 56), (64, 64), (13, 29), (1, 1)]:
            assert block(torch.randn(1, 64, *hw)).shape == (1, 64, *hw)


@pytest.fixture(scope="module")
def tinyvit_5m() -> Model:
    return build("tinyvit-5m-cls.yaml").eval()


@pytest.mark.parametrize("size", [(224, 224), (256, 256), (512, 512), (1024, 1024), (160, 288)])
def test_backbone_runs_at_any_size(size: tuple[int, int], tinyvit_5m: Model) -> None:
    if size == (1024, 1024):  # MobileSAM's layout: last merge stride 1, map at H/16
        rows = [PatchMerging(160, 320, 1), BasicLayer(320, 1, 32, 7)]
        x = torch.randn(1, 160, 64, 64)
        with torch.no_grad():
            for r in rows:
                x = r.eval()(x)
        assert x.shape == (1, 320, 64, 64)
        return
    with torch.no_grad():
        out, kept = tinyvit_5m.run_rows(torch.randn(1, 3, *size), keep=(7,))
    h, w = size
    assert kept[7].shape == (1, 320, -(-h // 32), -(-w // 32))
    assert out.shape == (1, 1000)


def test_timm_fixture_through_model_load(tinyvit_5m: Model, capsys: pytest.CaptureFixture) -> None:
    folder = FIXTURES / "tiny_vit_5m_224"
    if not folder.exists():
        pytest.skip("fixtures not present")
    io = torch.load(folder / "io.pt", weights_only=True)
    report = tinyvit_5m.load(folder / "state_dict.pt")
    printed = capsys.readouterr().out
    assert "Transferred 296/296" in printed and "timm TinyViT" in printed  # the transfer report is printed
    assert report.ok and not report.skipped
    with torch.no_grad():
        logits, kept = tinyvit_5m.run_rows(io["input"], keep=(7,))
    feat_err = (kept[7] - io["features"]).abs().max().item()
    logit_err = (logits - io["logits"]).abs().max().item()
    with capsys.disabled():
        print(f"\ntiny_vit_5m_224: features max abs err {feat_err:.3g}, logits {logit_err:.3g}")
    assert feat_err <= 1e-4 and logit_err <= 1e-3


def test_attention_row_gflops_match_the_analytic_count() -> None:
    from zoo.summary import profile_rows

    model = Model({"backbone": [[-1, 1, "PatchEmbed", [64]], [-1, 1, "TinyViTAttention", [32, 7]]]})
    stats = profile_rows(model, (120, 80))  # 30x20 map -> padded to 35x21 -> 5x3 windows of 7x7
    c, heads, head_dim, length = 64, 2, 32, 49
    windows, tokens = 5 * 3, 35 * 21  # padded tokens are computed on too
    macs = (
        tokens * c * 3 * heads * head_dim  # qkv
        + windows * heads * length * length * head_dim  # q @ k^T
        + windows * heads * length * length * head_dim  # softmax(..) @ v
        + tokens * heads * head_dim * c  # proj
    )
    assert stats[1].gflops * 1e9 == pytest.approx(2 * macs, rel=1e-9)
    assert stats[1].out_shape == "1x64x30x20"


def test_width_scales_keep_heads_valid() -> None:
    for scale in "nsml":
        model = build("tinyvit-cls.yaml", scale=scale).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 64, 96)).shape == (1, 1000)


def test_fuse_keeps_logits() -> None:
    folder = FIXTURES / "tiny_vit_5m_224"
    if not folder.exists():
        pytest.skip("fixtures not present")
    model = build("tinyvit-5m-cls.yaml").eval()
    model.load(folder / "state_dict.pt", verbose=False)
    x = torch.load(folder / "io.pt", weights_only=True)["input"]
    with torch.no_grad():
        before = model(x)
        model.fuse().fuse()  # idempotent
        after = model(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert (before - after).abs().max() < 1e-4


def test_backbone_row_loads_timm_weights_and_feeds_index_rows() -> None:
    folder = FIXTURES / "tiny_vit_5m_224"
    if not folder.exists():
        pytest.skip("fixtures not present")
    cfg = {
        "nc": 1000,
        "imgsz": 64,
        "backbone": [[-1, 1, "TinyViTBackbone", ["5m"]]],
        "head": [[0, 1, "Index", [3]], [-1, 1, "ClassifierHead", ["nc", 0, True]]],
    }
    model = Model(cfg).eval()
    assert model.records[0].out_channels == [64, 128, 160, 320]
    assert sum(p.numel() for p in model.parameters()) == TIMM_PARAMS["5m"]
    report = model.load(folder / "state_dict.pt", verbose=False)
    assert report.ok and not report.skipped
    io = torch.load(folder / "io.pt", weights_only=True)
    with torch.no_grad():
        logits, kept = model.run_rows(io["input"], keep=(1,))
    assert (kept[1] - io["features"]).abs().max() <= 1e-4
    assert (logits - io["logits"]).abs().max() <= 1e-3


def test_backbone_row_mobilesam_stride() -> None:
    from zoo.nn.tiny_vit import TinyViTBackbone

    backbone = TinyViTBackbone(3, "5m", last_stride=1).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 128, 96))
    assert [tuple(o.shape[1:]) for o in outs] == [(64, 32, 24), (128, 16, 12), (160, 8, 6), (320, 8, 6)]
