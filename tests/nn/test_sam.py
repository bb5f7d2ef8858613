"""SAM (TinyViT encoder): parameter counts, MobileSAM fixture parity, prompt shapes, any input size, FLOPs."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from zoo import Model
from zoo.nn.sam import SamHead, SamNeck
from zoo.nn.sam_keys import convert_sam, is_sam_checkpoint
from zoo.nn.sam_mask_decoder import MaskDecoder
from zoo.nn.sam_prompt_encoder import PromptEncoder
from zoo.nn.sam_transformer import ProjectedAttention
from zoo.summary import profile_rows

ROOT = Path(__file__).resolve().parents[2]
CFG = ROOT / "cfg" / "sam-tinyvit.yaml"
FIXTURE = ROOT / ".." / "shared" / "fixtures" / "mobile_sam"

REFERENCE_ENCODER_PARAMS = 6_065_532  # MobileSAM image_encoder incl. its unused TinyViT classifier
CLASSIFIER_KEYS = {"image_encoder.norm_head.weight", "image_encoder.norm_head.bias",
                   "image_encoder.head.weight", "image_encoder.head.bias"}


def _fixture() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    if not (FIXTURE / "mobile_sam.pt").exists():
        pytest.skip(f"fixture not found: {FIXTURE}")
    sd = torch.load(FIXTURE / "mobile_sam.pt", weights_only=True)
    io = torch.load(FIXTURE / "io.pt", weights_only=True)
    return sd, io


@pytest.fixture(scope="module")
def model() -> Model:
    torch.manual_seed(0)
    return Model(CFG).eval()


@pytest.fixture(scope="module")
def loaded(model: Model):
    """The cfg model with ``mobile_sam.pt`` loaded through ``Model.load`` (the registered key map)."""
    _, io = _fixture()
    m = copy.deepcopy(model)
    report = m.load(FIXTURE / "mobile_sam.pt", verbose=False)
    return m.eval(), report, io


# ----------------------------------------------------------------------------------------- parameters


def test_param_counts(model: Model) -> None:
    assert sum(p.numel() for p in PromptEncoder(256, 16).parameters()) == 6_220
    assert sum(p.numel() for p in MaskDecoder().parameters()) == 4_058_340
    head = model.model[-1]
    assert isinstance(head, SamHead) and isinstance(model.model[-2], SamNeck)
    assert sum(p.numel() for p in head.prompt_encoder.parameters()) == 6_220
    assert sum(p.numel() for p in head.mask_decoder.parameters()) == 4_058_340
    encoder = sum(p.numel() for row in model.model[:-1] for p in row.parameters())
    # the reference counts TinyViT's classifier (norm_head 2*320 + head 320*1000+1000) that SAM never runs
    assert encoder == 5_743_892 == REFERENCE_ENCODER_PARAMS - (2 * 320 + 320 * 1000 + 1000)
    assert model.task == "segment"


def test_reference_encoder_count_from_checkpoint() -> None:
    sd, _ = _fixture()
    learnable = {k: v for k, v in sd.items() if k.startswith("image_encoder.") and v.is_floating_point()
                 and "running_" not in k}
    assert sum(v.numel() for v in learnable.values()) == REFERENCE_ENCODER_PARAMS
    assert sum(learnable[k].numel() for k in CLASSIFIER_KEYS) == 321_640


# ----------------------------------------------------------------------------------------- parity


def test_decoder_parity_on_fixture_embeddings() -> None:
    sd, io = _fixture()
    pe, md = PromptEncoder(256, 16), MaskDecoder()
    for module, prefix in ((pe, "prompt_encoder."), (md, "mask_decoder.")):
        module.load_state_dict({k[len(prefix):]: v.float() for k, v in sd.items() if k.startswith(prefix)})
    emb = io["image_embeddings"]
    with torch.no_grad():
        sparse, dense = pe(io["point_coords"], io["point_labels"], None, None, (1024, 1024), (64, 64))
        masks, iou = md(emb, pe.dense_pe((64, 64)), sparse, dense, multimask_output=True)
    assert masks.shape == (1, 3, 256, 256)
    assert (masks - io["point_masks"]).abs().max() < 1e-4
    assert (iou - io["point_iou"]).abs().max() < 1e-4


def test_load_report(loaded) -> None:
    model, report, _ = loaded
    assert "segment-anything" in report.layout
    assert not report.missing and not report.unexpected and not report.mismatched
    assert len(report.loaded) == len(model.state_dict())
    assert set(report.skipped) == CLASSIFIER_KEYS  # reported, not silently dropped
    assert all("classifier" in reason for reason in report.skipped.values())


def test_convert_passes_unknown_keys_through(model: Model) -> None:
    sd, _ = _fixture()
    converted, skipped = convert_sam({**sd, "image_encoder.extra.weight": torch.zeros(1)}, model)
    assert "image_encoder.extra.weight" in converted  # the loader reports it as unexpected
    assert set(skipped) == CLASSIFIER_KEYS


def test_detects_sam_layout() -> None:
    sd, _ = _fixture()
    assert is_sam_checkpoint(sd)
    assert not is_sam_checkpoint({k: v for k, v in sd.items() if not k.startswith("mask_decoder.")})


def test_mobile_sam_parity(loaded) -> None:
    model, _, io = loaded
    with torch.no_grad():
        _, kept = model.run_rows(io["image"], keep=(len(model.records) - 2,))
        emb = kept[len(model.records) - 2]
        head = model.model[-1]
        point_masks, point_iou = head(emb, points=io["point_coords"], labels=io["point_labels"], multimask_output=True)
        box_masks, box_iou = head(emb, boxes=io["box"], multimask_output=False)
    assert emb.shape == (1, 256, 64, 64)
    assert (emb - io["image_embeddings"]).abs().max() < 1e-3
    assert point_masks.shape == (1, 3, 256, 256) and point_iou.shape == (1, 3)
    assert (point_masks - io["point_masks"]).abs().max() < 1e-3
    assert (point_iou - io["point_iou"]).abs().max() < 1e-3
    assert box_masks.shape == (1, 1, 256, 256) and box_iou.shape == (1, 1)
    assert (box_masks - io["box_masks"]).abs().max() < 1e-3
    assert (box_iou - io["box_iou"]).abs().max() < 1e-3


# ----------------------------------------------------------------------------------------- shapes


def test_any_multiple_of_16_non_square(model: Model) -> None:
    x = torch.randn(2, 3, 96, 160)
    points = torch.tensor([[[100.0, 50.0]], [[10.0, 80.0]]])
    labels = torch.ones(2, 1, dtype=torch.long)
    head = model.model[-1]
    with torch.no_grad():
        (masks, iou), kept = model.run_rows(x, dict(points=points, labels=labels), keep=(len(model.records) - 2,))
        assert masks.shape == (2, 3, 24, 40) and iou.shape == (2, 3)
        emb = kept[len(model.records) - 2]
        assert emb.shape == (2, 256, 6, 10)
        masks, iou = head(emb, boxes=torch.tensor([[0.0, 0.0, 100.0, 90.0]] * 2), multimask_output=False)
        assert masks.shape == (2, 1, 24, 40) and iou.shape == (2, 1)
        masks, _ = head(emb, mask_inputs=torch.randn(2, 1, 24, 40))
        assert masks.shape == (2, 3, 24, 40)
        masks, iou = head(emb)  # no prompt at all: one prediction per image
        assert masks.shape == (2, 3, 24, 40) and torch.isfinite(masks).all()


def test_grouped_prompts_match_one_set_at_a_time(model: Model) -> None:
    torch.manual_seed(1)
    head = model.model[-1]
    emb = torch.randn(2, 256, 8, 12)  # input 128 x 192
    points = torch.rand(2, 3, 2, 2) * torch.tensor([192.0, 128.0])
    labels = torch.tensor([1, 0]).expand(2, 3, 2)
    boxes = torch.tensor([10.0, 20.0, 90.0, 100.0]).expand(2, 3, 4) + torch.arange(3.0).view(1, 3, 1)
    with torch.no_grad():
        masks, iou = head(emb, points=points, labels=labels, boxes=boxes)
        assert masks.shape == (2, 3, 3, 32, 48) and iou.shape == (2, 3, 3)
        for b in range(2):
            for n in range(3):
                m1, i1 = head(emb[b:b + 1], points=points[b:b + 1, n], labels=labels[b:b + 1, n],
                              boxes=boxes[b:b + 1, n])
                torch.testing.assert_close(masks[b, n], m1[0], atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(iou[b, n], i1[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(points=torch.zeros(1, 2, 2)), "labels"),
    (dict(points=torch.zeros(1, 2, 2), labels=torch.ones(1, 2), boxes=torch.zeros(1, 3, 4)), "mix"),
    (dict(points=torch.zeros(1, 2, 2, 2), labels=torch.ones(1, 2, 2), boxes=torch.zeros(1, 3, 4)), "disagree"),
    (dict(boxes=torch.zeros(2, 4)), "batch"),
    (dict(boxes=torch.zeros(1, 3)), "4 values"),
    (dict(points=torch.zeros(1, 2, 3), labels=torch.ones(1, 2)), "P, 2"),
    (dict(mask_inputs=torch.zeros(1, 1, 16, 16)), "4x the image embedding"),
])
def test_prompt_errors(model: Model, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model.model[-1](torch.zeros(1, 256, 8, 8), **kwargs)


def test_dense_pe_is_point_encoding_of_cell_centres() -> None:
    pe = PromptEncoder(64, 16)
    grid = pe.dense_pe((4, 6))[0]  # (C, 4, 6) for a 64 x 96 input at stride 16
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(6.0), indexing="ij")
    # embed_points adds 0.5 (pixel centre), so cell centre (j + 0.5) * 16 is pixel (j + 0.5) * 16 - 0.5
    pix = torch.stack([(xs + 0.5) * 16 - 0.5, (ys + 0.5) * 16 - 0.5], dim=-1).view(1, -1, 2)
    enc = pe.pe_layer.points(pix + 0.5, (64, 96))
    torch.testing.assert_close(enc.view(4, 6, -1).permute(2, 0, 1), grid, atol=1e-5, rtol=1e-5)


def test_attention_downsample_width() -> None:
    attn = ProjectedAttention(256, 8, downsample_rate=2)
    assert attn.q_proj.out_features == 128 and attn.out_proj.in_features == 128
    out = attn(torch.randn(2, 5, 256), torch.randn(2, 40, 256), torch.randn(2, 40, 256))
    assert out.shape == (2, 5, 256)
    with pytest.raises(ValueError, match="num_heads"):
        ProjectedAttention(256, 7)


# ----------------------------------------------------------------------------------------- FLOPs


def _basic_layer_flops(h: int, w: int, dim: int, heads: int, window: int, depth: int, head_dim: int = 32) -> int:
    """Analytic 2*MACs of a TinyViT stage at h x w: padded-window qkv/attention/proj, dw conv, MLP."""
    inner = heads * head_dim
    padded = math.ceil(h / window) * window * math.ceil(w / window) * window
    tokens = h * w
    macs = padded * dim * 3 * inner          # qkv (on padded tokens)
    macs += 2 * padded * window * window * inner  # q k^T and attn v within each window
    macs += padded * inner * dim             # proj
    macs += tokens * dim * 9                 # 3x3 depthwise local conv
    macs += 2 * tokens * dim * 4 * dim       # MLP
    return 2 * depth * macs


def test_flops_count_window_attention(model: Model) -> None:
    stats = {s.index: s for s in profile_rows(model, (128, 160))}
    # rows 5 and 7 see an 8x10 map: window 14 pads it to 14x14, window 7 to 14x14 as well
    assert stats[5].gflops * 1e9 == pytest.approx(_basic_layer_flops(8, 10, 160, 5, 14, 6), rel=1e-9)
    assert stats[7].gflops * 1e9 == pytest.approx(_basic_layer_flops(8, 10, 320, 10, 7, 2), rel=1e-9)
    assert stats[9].gflops is not None and stats[9].gflops > 0


# ----------------------------------------------------------------------------------------- train / fuse


def test_fused_model_matches(model: Model) -> None:
    torch.manual_seed(2)
    x = torch.randn(1, 3, 64, 96)
    fused = copy.deepcopy(model)
    for m in fused.modules():  # non-trivial BN statistics so folding has something to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    reference = copy.deepcopy(fused)
    fused.fuse().fuse()  # idempotent
    with torch.no_grad():
        a, ia = reference(x, boxes=torch.tensor([[4.0, 4.0, 60.0, 40.0]]))
        b, ib = fused(x, boxes=torch.tensor([[4.0, 4.0, 60.0, 40.0]]))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ia, ib, atol=1e-4, rtol=1e-4)


def test_gradients_reach_encoder_and_prompt_embeddings(model: Model) -> None:
    m = copy.deepcopy(model).train()
    masks, iou = m(torch.randn(2, 3, 64, 64), points=torch.tensor([[[10.0, 20.0]], [[40.0, 50.0]]]),
                   labels=torch.ones(2, 1), boxes=torch.tensor([[0.0, 0.0, 30.0, 30.0]] * 2))
    (masks.sigmoid().mean() + iou.mean()).backward()
    head = m.model[-1]
    for p in (head.prompt_encoder.point_embeddings[1].weight, head.prompt_encoder.point_embeddings[2].weight,
              head.mask_decoder.mask_tokens.weight, m.model[0].conv1.conv.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
