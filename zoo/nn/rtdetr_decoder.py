"""RT-DETR transformer decoder head: query selection, deformable cross-attention, denoising queries.

RT-DETR: Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", arXiv:2304.08069.
Multi-scale deformable attention: Zhu et al., "Deformable DETR", arXiv:2010.04159 (written here in
plain PyTorch as one ``F.embedding_bag`` over bilinear corner rows; no custom CUDA op).
Contrastive denoising: Zhang et al., "DINO", arXiv:2203.03605.

Attribute names follow Ultralytics' ``RTDETRDecoder`` so its checkpoints load strictly.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from zoo.nn.common import MLP, ULTRA_BN_EPS, ULTRA_BN_MOMENTUM, exporting, fuse_conv_bn
from zoo.nn.deformable_attention import MSDeformAttn
from zoo.nn.fast_cpu import conv_act, linear_act
from zoo.nn.heads import DEFAULT_MAX_DET
from zoo.nn.multihead_attention import MultiheadAttention
from zoo.nn.rtdetr_denoising import denoising_queries, inverse_sigmoid
from zoo.ops.boxes import xywh_to_xyxy
from zoo.registry import register
from zoo.wiring import multi_input, not_a_map

__all__ = ["DeformableDecoderLayer", "DeformableDecoder", "RTDETRDecoder", "generate_anchors"]


class DeformableDecoderLayer(nn.Module):
    """Self-attention over queries, deformable cross-attention into the image tokens, FFN; post-norm.

    ``embed (B, Q, C)``, ``ref (B, Q, 4)`` -> ``(B, Q, C)``.
    """

    def __init__(self, d_model: int = 256, n_heads: int = 8, d_ffn: int = 1024, dropout: float = 0.0,
                 act: nn.Module = nn.ReLU(), n_levels: int = 4, n_points: int = 4) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.act = act
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, embed: torch.Tensor, ref: torch.Tensor, feats: torch.Tensor, shapes: list[tuple[int, int]],
                attn_mask: torch.Tensor | None = None, query_pos: torch.Tensor | None = None) -> torch.Tensor:
        qk = embed if query_pos is None else embed + query_pos
        embed = self.norm1(embed + self.drop(self.self_attn(qk, qk, embed, attn_mask)))
        q = embed if query_pos is None else embed + query_pos
        embed = self.norm2(embed + self.drop(self.cross_attn(q, ref.unsqueeze(2), feats, shapes)))
        ffn = linear_act(self.drop(linear_act(embed, self.linear1, self.act)), self.linear2)
        return self.norm3(embed + self.drop(ffn))


class DeformableDecoder(nn.Module):
    """A stack of :class:`DeformableDecoderLayer` with iterative box refinement.

    Returns ``(boxes, logits)`` stacked over layers: every layer in training, only layer ``eval_idx``
    in eval (``(1, B, Q, 4)``, ``(1, B, Q, nc)``). Boxes are cxcywh in [0, 1].
    """

    def __init__(self, layers: list[DeformableDecoderLayer], eval_idx: int = -1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(layers)
        self.eval_idx = eval_idx if eval_idx >= 0 else self.num_layers + eval_idx
        if not 0 <= self.eval_idx < self.num_layers:
            raise ValueError(f"eval_idx {eval_idx} is out of range for {self.num_layers} decoder layers")

    def forward(self, embed: torch.Tensor, ref_logits: torch.Tensor, feats: torch.Tensor,
                shapes: list[tuple[int, int]], bbox_heads: nn.ModuleList, score_heads: nn.ModuleList,
                pos_head: nn.Module, attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        ref = ref_logits.sigmoid()
        boxes: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        prev = ref
        for i, layer in enumerate(self.layers):
            embed = layer(embed, ref, feats, shapes, attn_mask, pos_head(ref))
            delta = bbox_heads[i](embed)
            refined = torch.sigmoid(delta + inverse_sigmoid(ref))
            if self.training:
                logits.append(score_heads[i](embed))
                # the loss sees boxes refined from the *undetached* previous box, so gradients chain
                boxes.append(refined if i == 0 else torch.sigmoid(delta + inverse_sigmoid(prev)))
            elif i == self.eval_idx:
                logits.append(score_heads[i](embed))
                boxes.append(refined)
                break
            prev = refined
            ref = refined.detach() if self.training else refined
        return torch.stack(boxes), torch.stack(logits)


def generate_anchors(shapes: list[tuple[int, int]], grid_size: float = 0.05, eps: float = 1e-2,
                     dtype: torch.dtype = torch.float32,
                     device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One anchor per feature-map cell, in logit space.

    Level ``l`` cells get centre ``((x+0.5)/w, (y+0.5)/h)`` and size ``grid_size * 2**l``.
    Returns ``anchors (1, sum(h*w), 4)`` (inverse-sigmoid cxcywh, ``inf`` where invalid) and
    ``valid (1, sum(h*w), 1)`` (all four coordinates strictly inside ``(eps, 1-eps)``).
    """
    per_level = []
    for lvl, (h, w) in enumerate(shapes):
        ys = (torch.arange(h, dtype=dtype, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=dtype, device=device) + 0.5) / w
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        wh = torch.full_like(cx, grid_size * 2.0 ** lvl)
        per_level.append(torch.stack([cx, cy, wh, wh], -1).reshape(1, h * w, 4))
    anchors = torch.cat(per_level, 1)
    valid = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
    anchors = torch.log(anchors / (1 - anchors)).masked_fill(~valid, float("inf"))
    return anchors, valid


@register(wiring=multi_input(insert_at=1, spatial=not_a_map()))
class RTDETRDecoder(nn.Module):
    """RT-DETR head: projects each input level to ``hd`` channels, scores every cell as a candidate
    (encoder head), keeps the top ``nq`` as queries with their boxes as references, and refines them
    through ``ndl`` deformable decoder layers.

    Args (YAML ``[nc, hd, nq, ndp, nh, ndl, d_ffn, dropout, act, eval_idx, nd, label_noise_ratio,
    box_noise_scale, learnt_init_query]``; ``ch`` is filled in by the builder): ``nd`` is the number of
    denoising queries used in training (0 disables denoising).

    Input: list of ``(B, ch[i], H_i, W_i)`` maps. Output:

    * eval (the detection contract of :mod:`zoo.nn.heads`): ``(detections, raw)``. ``detections
      (B, K, 6)`` are ``[x1, y1, x2, y2, score, class]`` in input-image pixels, the top
      ``K = min(max_det, Q*nc)`` (query, class) pairs by sigmoid score (NMS-free). ``raw`` is a dict
      with ``dec_bboxes (B, Q, 4)`` (last layer, cxcywh normalised to [0, 1]), ``dec_scores (B, Q, nc)``
      (last-layer class logits), ``enc_bboxes (B, Q, 4)`` and ``enc_scores (B, Q, nc)`` (the selected
      encoder proposals).
    * training (``forward(x, batch=...)``): a dict with ``dec_bboxes (L, B, D+Q, 4)``,
      ``dec_scores (L, B, D+Q, nc)`` for every decoder layer (the first ``D`` queries are denoising
      queries), ``enc_bboxes``, ``enc_scores`` and ``dn_meta`` (``None`` without denoising, else
      ``dn_pos_idx`` / ``dn_num_group`` / ``dn_num_split`` as documented in
      :func:`~zoo.nn.rtdetr_denoising.denoising_queries`).
    """

    task = "detect"
    loss = "rtdetr"  # its training loss: the "rtdetr" entry of zoo.engine.tasks.heads.HEADS

    def __init__(self, nc: int = 80, ch: tuple[int, ...] | list[int] = (512, 1024, 2048), hd: int = 256,
                 nq: int = 300, ndp: int = 4, nh: int = 8, ndl: int = 6, d_ffn: int = 1024, dropout: float = 0.0,
                 act: nn.Module | None = nn.ReLU(), eval_idx: int = -1, nd: int = 100, label_noise_ratio: float = 0.5,
                 box_noise_scale: float = 1.0, learnt_init_query: bool = False) -> None:
        super().__init__()
        if not isinstance(nc, int) or nc < 1:
            raise ValueError(f"nc must be a positive integer, got {nc!r}")
        if not ch:
            raise ValueError("RTDETRDecoder needs at least one input feature map")
        if nq < 1 or ndl < 1 or nd < 0:
            raise ValueError(f"need nq >= 1, ndl >= 1 and nd >= 0 (got nq={nq}, ndl={ndl}, nd={nd})")
        self.nc, self.hidden_dim, self.nhead = nc, hd, nh
        self.nl = len(ch)
        self.num_queries, self.num_decoder_layers = nq, ndl
        self.num_denoising, self.label_noise_ratio, self.box_noise_scale = nd, label_noise_ratio, box_noise_scale
        self.max_det = DEFAULT_MAX_DET
        self.strides: list[float] = [8.0 * 2 ** i for i in range(self.nl)]  # set by the builder

        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hd, 1, bias=False),
                          nn.BatchNorm2d(hd, eps=ULTRA_BN_EPS, momentum=ULTRA_BN_MOMENTUM))
            for c in ch
        )
        act = nn.ReLU() if act is None else act  # a YAML row cannot spell a module: None = the default
        layers = [DeformableDecoderLayer(hd, nh, d_ffn, dropout, act, self.nl, ndp) for _ in range(ndl)]
        self.decoder = DeformableDecoder(layers, eval_idx)
        self.denoising_class_embed = nn.Embedding(nc, hd)
        self.learnt_init_query = learnt_init_query
        if learnt_init_query:
            self.tgt_embed = nn.Embedding(nq, hd)
        self.query_pos_head = MLP(4, 2 * hd, hd, num_layers=2)
        self.enc_output = nn.Sequential(nn.Linear(hd, hd), nn.LayerNorm(hd))
        self.enc_score_head = nn.Linear(hd, nc)
        self.enc_bbox_head = MLP(hd, hd, 4, num_layers=3)
        self.dec_score_head = nn.ModuleList(nn.Linear(hd, nc) for _ in range(ndl))
        self.dec_bbox_head = nn.ModuleList(MLP(hd, hd, 4, num_layers=3) for _ in range(ndl))
        self._anchor_key: tuple | None = None
        self._anchors: tuple[torch.Tensor, torch.Tensor] | None = None
        self._reset_parameters()

    @torch.no_grad()
    def _reset_parameters(self) -> None:
        # classification prior of 1% (focal-loss style), scaled from the 80-class setting
        bias_cls = -math.log((1 - 0.01) / 0.01) / 80 * self.nc
        nn.init.constant_(self.enc_score_head.bias, bias_cls)
        for head in [self.enc_bbox_head, *self.dec_bbox_head]:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        for score in self.dec_score_head:
            nn.init.constant_(score.bias, bias_cls)
        bound = 1 / math.sqrt(self.enc_output[0].weight.shape[0])
        nn.init.uniform_(self.enc_output[0].bias, -bound, bound)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        if self.learnt_init_query:
            nn.init.xavier_uniform_(self.tgt_embed.weight)
        for lin in self.query_pos_head.layers:
            nn.init.xavier_uniform_(lin.weight)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold each input projection's BatchNorm into its 1x1 conv (inference; idempotent)."""
        for i, proj in enumerate(self.input_proj):
            if len(proj) == 2:
                self.input_proj[i] = nn.Sequential(fuse_conv_bn(proj[0], proj[1]))

    def set_strides(self, strides: list[float]) -> None:
        """Strides of the input maps (the builder calls this); used to express boxes in pixels."""
        if len(strides) != self.nl:
            raise ValueError(f"RTDETRDecoder has {self.nl} inputs but got {len(strides)} strides")
        self.strides = [float(s) for s in strides]

    def _anchors_for(self, shapes: list[tuple[int, int]], ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if exporting():  # traced sizes: the graph builds the anchors for whatever size comes in
            return generate_anchors(shapes, dtype=ref.dtype, device=ref.device)
        key = (tuple(shapes), ref.device, ref.dtype)
        if self._anchor_key != key or self._anchors is None:
            self._anchors = generate_anchors(shapes, dtype=ref.dtype, device=ref.device)
            self._anchor_key = key
        return self._anchors

    def _encoder_input(self, x: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Project and flatten every level: ``(B, sum(h*w), hd)`` plus the ``(h, w)`` of each level."""
        if len(x) != self.nl:
            raise ValueError(f"RTDETRDecoder expects {self.nl} feature maps, got {len(x)}")
        tokens, shapes = [], []
        for proj, feat in zip(self.input_proj, x):
            y = conv_act(feat, proj[0]) if len(proj) == 1 else proj(feat)
            # while tracing, sizes stay traced values (int() would bake this input's size into the graph)
            shapes.append((y.shape[2], y.shape[3]) if exporting() else (int(y.shape[2]), int(y.shape[3])))
            tokens.append(y.flatten(2).transpose(1, 2))
        return torch.cat(tokens, 1), shapes

    def encoder_scores(self, feats: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every cell as a candidate query: ``feats (B, L, hd)``, ``valid (1, L, 1)`` -> memory
        ``(B, L, hd)`` (invalid border cells zeroed first) and class logits ``(B, L, nc)``."""
        # the Sequential's Linear and LayerNorm one by one: nn.Linear on a 3-D input is a plain addmm,
        # the oneDNN call is ~2x faster on CPU here (8400 x 256 x 256 at 640)
        project, norm = self.enc_output
        # a zeroed cell projects to the bias: set the few invalid rows (the level-0 border at 640)
        # after the GEMM instead of masking every input row before it
        memory = linear_act(feats, project)
        fill = project.bias if project.bias is not None else memory.new_zeros(())
        if exporting():  # the same values without an in-place write through data-dependent indices
            memory = torch.where(valid, memory, fill)
        else:
            invalid = (~valid[0, :, 0]).nonzero().squeeze(1)
            memory[:, invalid] = fill
        memory = norm(memory)
        return memory, linear_act(memory, self.enc_score_head)

    def _decoder_input(self, feats: torch.Tensor, shapes: list[tuple[int, int]], dn_embed: torch.Tensor | None,
                       dn_bbox: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k query selection: ``(embed, ref_logits, enc_bboxes, enc_scores)``."""
        b = feats.shape[0]
        anchors, valid = self._anchors_for(shapes, feats)
        memory, scores = self.encoder_scores(feats, valid)
        # a traced graph keeps nq queries whatever the size (it needs at least nq cells: ONNX TopK fails else)
        k = self.num_queries if exporting() else min(self.num_queries, memory.shape[1])
        top = torch.topk(scores.max(-1).values, k, dim=1).indices  # (B, k)
        gather = top.unsqueeze(-1)
        top_memory = memory.gather(1, gather.expand(-1, -1, memory.shape[-1]))
        top_anchors = anchors.expand(b, -1, -1).gather(1, gather.expand(-1, -1, 4))
        ref_logits = self.enc_bbox_head(top_memory) + top_anchors
        enc_bboxes = ref_logits.sigmoid()
        enc_scores = scores.gather(1, gather.expand(-1, -1, self.nc))
        embed = self.tgt_embed.weight[:k].unsqueeze(0).expand(b, -1, -1) if self.learnt_init_query else top_memory
        if self.training:
            # queries are selected, not learned through: only the heads see the encoder's gradient
            ref_logits = ref_logits.detach()
            if not self.learnt_init_query:
                embed = embed.detach()
        if dn_bbox is not None:
            ref_logits = torch.cat([dn_bbox, ref_logits], 1)
            embed = torch.cat([dn_embed, embed], 1)
        return embed, ref_logits, enc_bboxes, enc_scores

    def forward(self, x: list[torch.Tensor], *, batch: dict[str, Any] | None = None,
                max_det: int | None = None) -> Any:
        """``batch``: training targets for the denoising queries; ``max_det`` (eval only): detections to
        return per image, default :attr:`max_det`."""
        feats, shapes = self._encoder_input(x)
        dn_embed = dn_bbox = attn_mask = dn_meta = None
        if self.training and batch is not None and self.num_denoising > 0:
            num_queries = min(self.num_queries, feats.shape[1])
            dn_embed, dn_bbox, attn_mask, dn_meta = denoising_queries(
                batch, feats.shape[0], self.nc, num_queries, self.denoising_class_embed.weight,
                self.num_denoising, self.label_noise_ratio, self.box_noise_scale,
            )
        embed, ref_logits, enc_bboxes, enc_scores = self._decoder_input(feats, shapes, dn_embed, dn_bbox)
        dec_bboxes, dec_scores = self.decoder(embed, ref_logits, feats, shapes, self.dec_bbox_head,
                                              self.dec_score_head, self.query_pos_head, attn_mask)
        if self.training:
            return {"dec_bboxes": dec_bboxes, "dec_scores": dec_scores, "enc_bboxes": enc_bboxes,
                    "enc_scores": enc_scores, "dn_meta": dn_meta}
        raw = {"dec_bboxes": dec_bboxes[-1], "dec_scores": dec_scores[-1], "enc_bboxes": enc_bboxes,
               "enc_scores": enc_scores}
        return self.postprocess(raw["dec_bboxes"], raw["dec_scores"], shapes, max_det), raw

    def postprocess(self, boxes: torch.Tensor, logits: torch.Tensor, shapes: list[tuple[int, int]],
                    max_det: int | None = None) -> torch.Tensor:
        """Top-k over queries x classes: ``(B, Q, 4)`` cxcywh + ``(B, Q, nc)`` logits -> ``(B, K, 6)``
        ``[x1, y1, x2, y2, score, class]`` in pixels of the input image (size = level-0 map x its stride)."""
        b, q, nc = logits.shape
        img_h, img_w = shapes[0][0] * self.strides[0], shapes[0][1] * self.strides[0]
        k = min(self.max_det if max_det is None else max_det, q * nc)
        scores, idx = logits.sigmoid().flatten(1).topk(k, dim=1)
        labels = idx % nc
        picked = boxes.gather(1, (idx // nc).unsqueeze(-1).expand(-1, -1, 4))
        xyxy = xywh_to_xyxy(picked)
        # x and y scaled apart, by the sizes as they come (ints, traced or symbolic sizes while exporting):
        # a new tensor built from them would hold this input's size as a constant of an exported graph
        xyxy = torch.stack((xyxy[..., 0::2] * img_w, xyxy[..., 1::2] * img_h), -1).flatten(-2)
        return torch.cat([xyxy, scores.unsqueeze(-1), labels.unsqueeze(-1).to(xyxy.dtype)], -1)
