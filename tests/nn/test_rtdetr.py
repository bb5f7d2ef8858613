"""RT-DETR: Ultralytics parameter counts, fixture parity, any-size inputs, fusing, denoising training."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch.nn as nn

from zoo.builder import parse_model
from zoo.config import resolve_spec
from zoo.errors import ConfigError
from zoo.model import Model
from zoo.nn.rtdetr import AIFI, RepConv, sincos_position_embedding_2d
from zoo.nn.deformable_attention import deformable_sample_projected
from zoo.nn.multihead_attention import MultiheadAttention
from zoo.nn.rtdetr_decoder import RTDETRDecoder, generate_anchors
from zoo.nn.rtdetr_denoising import denoising_queries

REPO = Path(__file__).resolve().parents[2]
CFG = REPO / "cfg"
FIXTURE = REPO / ".." / "shared" / "fixtures" / "rtdetr-tiny"

TINY_YAML = {
    "nc": 3,
    "scales": {"t": [0.33, 0.25, 512]},
    "backbone": [
        [-1, 1, "HGStem", [16, 32]],
        [-1, 1, "HGBlock", [32, 64, 3]],
        [-1, 1, "DWConv", [64, 3, 2, 1, False]],
        [-1, 1, "HGBlock", [48, 128, 3]],
        [-1, 1, "DWConv", [128, 3, 2, 1, False]],
        [-1, 1, "HGBlock", [64, 256, 5, True, False]],
        [-1, 1, "DWConv", [256, 3, 2, 1, False]],
        [-1, 1, "HGBlock", [96, 384, 5, True, False]],
    ],
    "head": [
        [-1, 1, "Conv", [64, 1, 1, None, 1, 1, False]],
        [-1, 1, "AIFI", [128, 4]],
        [-1, 1, "Conv", [64, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [5, 1, "Conv", [64, 1, 1, None, 1, 1, False]],
        [[-2, -1], 1, "Concat", [1]],
        [-1, 1, "RepC3", [64]],
        [-1, 1, "Conv", [64, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [3, 1, "Conv", [64, 1, 1, None, 1, 1, False]],
        [[-2, -1], 1, "Concat", [1]],
        [-1, 1, "RepC3", [64]],
        [-1, 1, "Conv", [64, 3, 2]],
        [[-1, 15], 1, "Concat", [1]],
        [-1, 1, "RepC3", [64]],
        [-1, 1, "Conv", [64, 3, 2]],
        [[-1, 10], 1, "Concat", [1]],
        [-1, 1, "RepC3", [64]],
        # nc, hd, nq, ndp, nh, ndl, d_ffn, dropout, act, eval_idx, nd
        [[19, 22, 25], 1, "RTDETRDecoder", ["nc", 32, 20, 2, 4, 2, 64, 0.0, None, -1, 12]],
    ],
}


def tiny_model(nd: int = 12) -> Model:
    """A 3-class HGNet RT-DETR (20 queries, 2 decoder layers) with ``nd`` denoising queries."""
    cfg = copy.deepcopy(TINY_YAML)
    cfg["head"][-1][3][10] = nd
    return Model(cfg)


@pytest.fixture(scope="module")
def tiny() -> Model:
    torch.manual_seed(0)
    return tiny_model(nd=12)


def _fixture(name: str) -> Path:
    path = FIXTURE / name
    if not path.exists():
        pytest.skip(f"fixture {path} not available")
    return path


# --------------------------------------------------------------------------- structure
@pytest.mark.parametrize("name, params", [
    ("rtdetr-l", 32_970_476), ("rtdetr-x", 67_467_852), ("rtdetr-resnet50", 42_925_132),
])
def test_param_counts_match_ultralytics(name: str, params: int) -> None:
    graph = parse_model(resolve_spec(CFG / f"{name}.yaml"))
    assert sum(r.params for r in graph.records) == params
    bns = [m for mod in graph.modules for m in mod.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(bn.eps == 1e-3 and bn.momentum == 0.03 for bn in bns)
    head = graph.modules[-1]
    assert isinstance(head, RTDETRDecoder) and head.task == "detect"


def test_resnet_layers_wire_expanded_channels() -> None:
    graph = parse_model(resolve_spec(CFG / "rtdetr-resnet101.yaml"))
    assert [r.out_channels for r in graph.records[:5]] == [64, 256, 512, 1024, 2048]
    assert len(graph.modules[3].layer) == 23  # ResNet-101's third stage
    assert graph.records[-1].args[1] == [256, 256, 256]  # channel list inserted at args[1]


def test_mobilevit_cfg_matches_seed_rows() -> None:
    from zoo.registry import MODULES

    if "MobileViTBackbone" not in MODULES:
        pytest.skip("MobileViT backbone (backbones issue) not available")
    graph = parse_model(resolve_spec(CFG / "rtdetr-mobilevit.yaml"))
    params = [r.params for r in graph.records]
    # the seed post's table (nc=1) from its Conv after the backbone to the decoder
    seed = [164352, 789760, 66048, 0, 33280, 0, 2232320, 66048, 0, 25088, 0, 2232320, 590336, 0, 2232320,
            590336, 0, 2232320, 7303907]
    assert params[4:] == seed
    assert [r.out_channels for r in graph.records[1:4]] == [96, 128, 640]
    # seed total 24,137,067 includes mobile_vit_small's unused 640->1000 classifier (641,000 params)
    assert sum(params) == 24_137_067 - (640 * 1000 + 1000)


def test_bad_decoder_args_are_config_errors() -> None:
    cfg = {**TINY_YAML, "head": [*TINY_YAML["head"][:-1], [[19, 22, 25], 1, "RTDETRDecoder", ["nc", 30, 20, 2, 4]]]}
    with pytest.raises(ConfigError, match="row 26"):
        Model(cfg)


# --------------------------------------------------------------------------- fixture parity
def test_fixture_parity_dec_bboxes_and_scores() -> None:
    yaml_path, sd_path, io_path = _fixture("model.yaml"), _fixture("state_dict.pt"), _fixture("io.pt")
    model = Model(yaml_path).eval()
    state = torch.load(sd_path, weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    io = torch.load(io_path, weights_only=True)
    with torch.no_grad():
        dets, raw = model(io["input"])
    err_boxes = (raw["dec_bboxes"] - io["dec_bboxes"]).abs().max().item()
    err_scores = (raw["dec_scores"] - io["dec_scores"]).abs().max().item()
    assert err_boxes <= 1e-4 and err_scores <= 1e-4, (err_boxes, err_scores)

    # eval output: top-k over (query, class) pairs in pixels of the 256x256 input, best first
    nq, nc = io["dec_scores"].shape[1:]
    assert dets.shape == (1, min(300, nq * nc), 6)
    probs = io["dec_scores"][0].sigmoid()
    best = int(probs.flatten().argmax())
    q, c = divmod(best, nc)
    cx, cy, w, h = (io["dec_bboxes"][0, q] * 256).tolist()
    expected = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, probs[q, c].item(), c])
    assert torch.allclose(dets[0, 0], expected, atol=1e-4)
    assert torch.all(dets[0, 1:, 4] <= dets[0, :-1, 4])

    # fused (RepConv / Conv+BN folded) model gives the same decoder outputs
    model.fuse()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.model[:26].modules())
    with torch.no_grad():
        _, fused = model(io["input"])
    assert (fused["dec_bboxes"] - io["dec_bboxes"]).abs().max() < 1e-3
    assert (fused["dec_scores"] - io["dec_scores"]).abs().max() < 1e-3


# --------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("hw", [(160, 160), (224, 224), (192, 320)])
def test_any_multiple_of_32(tiny: Model, hw: tuple[int, int]) -> None:
    model = tiny.eval()
    head = model.model[-1]
    h, w = hw
    with torch.no_grad():
        dets, raw = model(torch.rand(2, 3, h, w))
    cells = sum((h // s) * (w // s) for s in (8, 16, 32))
    assert head.strides == [8.0, 16.0, 32.0]
    assert head._anchors[0].shape == (1, cells, 4)
    assert raw["dec_bboxes"].shape == (2, 20, 4) and raw["dec_scores"].shape == (2, 20, 3)
    assert dets.shape == (2, 60, 6) and torch.isfinite(dets).all()
    assert ((raw["dec_bboxes"] >= 0) & (raw["dec_bboxes"] <= 1)).all()


def test_aifi_position_embedding_follows_map_size() -> None:
    # Ultralytics' formula on a square map: ij-meshgrid of (w, h); first half encodes the row index
    n, dim = 5, 16
    gw, gh = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    ow, oh = gw.flatten()[:, None] * omega, gh.flatten()[:, None] * omega
    reference = torch.cat([ow.sin(), ow.cos(), oh.sin(), oh.cos()], 1)[None]
    assert torch.allclose(sincos_position_embedding_2d(n, n, dim), reference, atol=1e-6)

    emb = sincos_position_embedding_2d(3, 7, dim)  # non-square: token (r, c) encodes exactly r and c
    assert emb.shape == (1, 21, dim)
    token = 2 * 7 + 5
    assert torch.allclose(emb[0, token, : dim // 4], (2 * omega).sin())
    assert torch.allclose(emb[0, token, dim // 2: 3 * dim // 4], (5 * omega).sin())

    aifi = AIFI(16, 32, 4).eval()
    for size in ((4, 4), (3, 6)):
        assert aifi(torch.randn(1, 16, *size)).shape == (1, 16, *size)


def test_anchors_and_valid_mask() -> None:
    anchors, valid = generate_anchors([(4, 6), (2, 3)])
    assert anchors.shape == (1, 30, 4) and valid.shape == (1, 30, 1)
    first = torch.sigmoid(anchors[0, 0])
    assert torch.allclose(first, torch.tensor([0.5 / 6, 0.5 / 4, 0.05, 0.05]), atol=1e-6)
    assert torch.isinf(anchors[~valid[..., 0]]).all() and torch.isfinite(anchors[valid[..., 0]]).all()
    # level-1 anchors are 0.1 wide; every cell centre lies inside (0.01, 0.99)
    assert valid.all()
    _, valid_big = generate_anchors([(2, 2)], grid_size=0.995)
    assert not valid_big.any()


def test_deformable_sampling_reads_pixel_centres() -> None:
    h, w, heads, d = 3, 4, 2, 5
    memory = torch.randn(1, h * w, heads * d)
    identity = nn.Linear(heads * d, heads * d)
    nn.init.eye_(identity.weight)
    nn.init.zeros_(identity.bias)
    y, x = 2, 1
    loc = torch.tensor([(x + 0.5) / w, (y + 0.5) / h]).view(1, 1, 1, 1, 1, 2).expand(1, 1, heads, 1, 1, 2)
    with torch.no_grad():
        out = deformable_sample_projected(memory, [(h, w)], loc, torch.ones(1, 1, heads, 1, 1), identity)
    assert torch.allclose(out.view(heads * d), memory[0, y * w + x], atol=1e-6)


def _grid_sample_reference(value, shapes, locations, weights):
    """Deformable sampling the way Deformable DETR writes it: one F.grid_sample per level, then the
    attention-weighted sum over levels x points."""
    b, _, heads, d = value.shape
    q, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    per_level = value.split([h * w for h, w in shapes], dim=1)
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = per_level[lvl].permute(0, 2, 3, 1).reshape(b * heads, d, h, w)
        g = (locations[:, :, :, lvl] * 2 - 1).transpose(1, 2).reshape(b * heads, q, points, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*heads, d, Q, levels*points)
    w = weights.transpose(1, 2).reshape(b * heads, 1, q, levels * points)
    return (stacked * w).sum(-1).view(b, heads * d, q).transpose(1, 2)


@pytest.mark.parametrize("batch,shapes,masked", [(1, [(20, 20), (10, 10), (5, 5)], False),
                                                 (2, [(7, 9), (4, 5)], True)])
def test_sampling_before_projecting_matches_projecting_first(batch, shapes, masked) -> None:
    """deformable_sample_projected(memory, proj) == grid_sample sampling of proj(memory), padded tokens
    zeroed after the projection, in values and in gradients for every input and parameter."""
    torch.manual_seed(1)
    tokens, levels, heads, d, c = sum(h * w for h, w in shapes), len(shapes), 4, 8, 24
    memory = torch.randn(batch, tokens, c, requires_grad=True)
    proj = nn.Linear(c, heads * d)
    nn.init.normal_(proj.bias)  # a non-zero bias: off-map corners must not receive it
    mask = torch.rand(batch, tokens) < 0.3 if masked else None
    locations = (torch.rand(batch, 11, heads, levels, 3, 2) * 1.4 - 0.2).requires_grad_()
    weights = torch.rand(batch, 11, heads, levels, 3, requires_grad=True)
    upstream = torch.randn(batch, 11, heads * d)
    inputs = (memory, locations, weights, proj.weight, proj.bias)

    def project_first():
        value = proj(memory)
        if mask is not None:
            value = value.masked_fill(mask[..., None], 0.0)
        return _grid_sample_reference(value.view(batch, tokens, heads, d), shapes, locations, weights)

    results = []
    for fn in (project_first, lambda: deformable_sample_projected(memory, shapes, locations, weights, proj, mask)):
        out = fn()
        results.append((out, *torch.autograd.grad((out * upstream).sum(), inputs)))
    for ref, got in zip(*results):
        assert (ref - got).abs().max() <= 1e-5 * max(1.0, ref.abs().max())


@pytest.mark.parametrize("grad", [False, True])
def test_multihead_attention_matches_torch(grad) -> None:
    """Same parameters as nn.MultiheadAttention (batch-first), same outputs: self-attention with one
    tensor as q and k (one fused q/k GEMM), distinct q/k/v, and a blocking mask; with autograd on (the
    plain ops) and off (the fused oneDNN linears)."""
    torch.manual_seed(0)
    ours = MultiheadAttention(32, 4).eval()
    ref = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    nn.init.normal_(ours.in_proj_bias)
    nn.init.normal_(ours.out_proj.bias)
    ref.load_state_dict(ours.state_dict())
    qk, v, other = torch.randn(2, 9, 32), torch.randn(2, 9, 32), torch.randn(2, 9, 32)
    mask = torch.rand(9, 9) < 0.3
    mask.fill_diagonal_(False)  # no fully blocked row
    with torch.set_grad_enabled(grad):
        for q, k, m in ((qk, qk, None), (qk, qk, mask), (qk, other, None)):
            expected = ref(q, k, v, attn_mask=m, need_weights=False)[0]
            assert torch.allclose(ours(q, k, v, m), expected, atol=1e-5)


@pytest.mark.parametrize("grad", [False, True])
def test_encoder_scores_zero_the_invalid_cells(grad) -> None:
    """Invalid cells are zeroed before the memory projection (so they project to its bias), whichever
    way the head computes it."""
    torch.manual_seed(0)
    head = RTDETRDecoder(nc=5, ch=(16, 16), hd=32, nq=7, ndp=2, nh=4, ndl=1, d_ffn=64).eval()
    nn.init.normal_(head.enc_output[0].bias)
    feats = torch.randn(2, 30, 32)
    valid = torch.rand(1, 30, 1) < 0.7
    with torch.set_grad_enabled(grad):
        memory, scores = head.encoder_scores(feats, valid)
        expected = head.enc_output(valid * feats)
        assert torch.allclose(memory, expected, atol=1e-5)
        assert torch.allclose(scores, head.enc_score_head(expected), atol=1e-5)


def test_repconv_fuse_with_identity_branch() -> None:
    torch.manual_seed(0)
    for groups in (1, 2):
        conv = RepConv(8, 8, g=groups, bn=True)
        for bn in (conv.conv1.bn, conv.conv2.bn, conv.bn):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 1.5)
        conv.eval()
        x = torch.randn(2, 8, 9, 7)
        before = conv(x)
        conv.fuse()
        conv.fuse()  # idempotent
        assert conv.conv is not None and not hasattr(conv, "conv1")
        assert torch.allclose(conv(x), before, atol=1e-5)


# --------------------------------------------------------------------------- training / denoising
def _batch() -> dict:
    return {
        "cls": torch.tensor([[0.0], [2.0], [1.0]]),
        "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4], [0.5, 0.5, 0.4, 0.4]]),
        "batch_idx": torch.tensor([0, 0, 1]),
    }


def test_training_outputs_with_denoising_and_backward(tiny: Model) -> None:
    torch.manual_seed(0)
    model = tiny.train()
    model.zero_grad()
    out = model(torch.rand(2, 3, 128, 128), batch=_batch())
    meta = out["dn_meta"]
    groups = 12 // 2
    num_dn = 2 * 2 * groups
    assert meta["dn_num_group"] == groups and meta["dn_num_split"] == [num_dn, 20]
    assert out["dec_bboxes"].shape == (2, 2, num_dn + 20, 4)
    assert out["dec_scores"].shape == (2, 2, num_dn + 20, 3)
    assert out["enc_bboxes"].shape == (2, 20, 4) and out["enc_scores"].shape == (2, 20, 3)
    assert [len(p) for p in meta["dn_pos_idx"]] == [2 * groups, 1 * groups]
    loss = out["dec_scores"].sigmoid().mean() + out["dec_bboxes"].mean() + out["enc_scores"].mean()
    loss.backward()
    head = model.model[-1]
    assert head.denoising_class_embed.weight.grad is not None
    assert head.dec_bbox_head[0].layers[-1].weight.grad.abs().sum() > 0  # zero-initialised, still learns
    assert model.model[0].stem1.conv.weight.grad.abs().sum() > 0  # the backbone is reached


def test_denoising_disabled_or_without_targets(tiny: Model) -> None:
    model = tiny.train()
    head = model.model[-1]
    head.num_denoising = 0  # configurable after build too
    try:
        out = model(torch.rand(1, 3, 128, 128), batch=_batch() | {"batch_idx": torch.tensor([0, 0, 0])})
    finally:
        head.num_denoising = 12
    assert out["dn_meta"] is None and out["dec_bboxes"].shape == (2, 1, 20, 4)
    no_dn = RTDETRDecoder(3, [16, 16, 16], hd=32, nq=20, ndl=1, nd=0).train()
    out = no_dn([torch.randn(1, 16, 16, 16), torch.randn(1, 16, 8, 8), torch.randn(1, 16, 4, 4)], batch=_batch())
    assert out["dn_meta"] is None and out["dec_bboxes"].shape == (1, 1, 20, 4)
    empty = {"cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4), "batch_idx": torch.zeros(0)}
    assert model(torch.rand(1, 3, 128, 128), batch=empty)["dn_meta"] is None


def test_denoising_queries_mask_and_noise() -> None:
    torch.manual_seed(0)
    table = torch.randn(3, 8)
    batch = _batch()
    embed, refs, mask, meta = denoising_queries(batch, 2, 3, 5, table, num_dn=8, label_noise_ratio=0.0)
    groups, max_gt = 4, 2
    num_dn = 2 * max_gt * groups
    assert embed.shape == (2, num_dn, 8) and refs.shape == (2, num_dn, 4) and mask.shape == (num_dn + 5,) * 2
    assert mask[num_dn:, :num_dn].all() and not mask[num_dn:, num_dn:].any() and not mask[:num_dn, num_dn:].any()
    for g in range(groups):
        lo, hi = g * 2 * max_gt, (g + 1) * 2 * max_gt
        assert not mask[lo:hi, lo:hi].any() and mask[lo:hi, :lo].all() and mask[lo:hi, hi:num_dn].all()
    boxes = torch.sigmoid(refs)
    gt = batch["bboxes"]
    for img, targets in ((0, [0, 1]), (1, [2])):
        pos = meta["dn_pos_idx"][img].view(groups, -1)
        for g in range(groups):
            for j, t in enumerate(targets):
                slot = int(pos[g, j])
                # label kept (no label noise), box corners moved by less than half the box size
                assert torch.allclose(embed[img, slot], table[int(batch["cls"][t])])
                err = (boxes[img, slot, :2] - gt[t, :2]).abs()
                assert (err <= gt[t, 2:] / 2 + 1e-4).all()
    # padding slots of image 1 (one target, room for two) stay empty
    assert embed[1, 1].abs().sum() == 0
