"""SAM prompt encoder: points, boxes and mask inputs -> sparse tokens and a dense embedding.

Segment Anything, Kirillov et al., arXiv:2304.02643 (Sec. 3 and App. A, "Prompt encoder").

Points and box corners are encoded with random Fourier features of their position (Tancik et al.,
arXiv:2006.10739) plus a learned embedding per kind (negative point, positive point, top-left corner,
bottom-right corner). A mask input is downscaled 4x by a small conv stack to the image-embedding
grid; without one, a learned "no mask" vector is broadcast over the grid. Nothing here depends on a
fixed resolution: grid sizes come from the image embedding at call time. Attribute names follow the
segment-anything checkpoint layout.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from zoo.nn.common import LayerNorm2d

__all__ = ["RandomFourierPositionEncoding", "PromptEncoder"]

PAD_LABEL = -1  # label of a "not a point" padding entry
NEGATIVE_LABEL = 0
POSITIVE_LABEL = 1


class RandomFourierPositionEncoding(nn.Module):
    """Position encoding with a fixed random Gaussian frequency matrix.

    Coordinates normalised to ``[0, 1]`` map to ``(..., 2 * num_feats)`` features
    ``[sin(2 pi (2c - 1) G), cos(2 pi (2c - 1) G)]`` with ``G ~ N(0, scale^2)`` of shape ``(2, num_feats)``.
    """

    def __init__(self, num_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` coordinates in ``[0, 1]`` (x, y) -> ``(..., 2 * num_feats)``."""
        gauss = self.positional_encoding_gaussian_matrix
        proj = (2.0 * math.pi) * ((2.0 * coords.to(gauss.dtype) - 1.0) @ gauss)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def grid(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an ``h x w`` grid: ``(2 * num_feats, h, w)``."""
        h, w = size
        gauss = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=gauss.device, dtype=gauss.dtype) + 0.5) / h
        xs = (torch.arange(w, device=gauss.device, dtype=gauss.dtype) + 0.5) / w
        coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return self.encode(coords).permute(2, 0, 1)

    def points(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Pixel coordinates ``(..., 2)`` (x, y) in an image of ``image_size = (H, W)`` -> ``(..., 2 * num_feats)``."""
        h, w = image_size
        scale = torch.tensor([1.0 / w, 1.0 / h], device=coords.device, dtype=torch.float32)
        return self.encode(coords.float() * scale)


class PromptEncoder(nn.Module):
    """Embed SAM prompts.

    Call with flat prompt batches (one prompt set per row ``b``):

    - ``points (b, P, 2)`` pixel (x, y) in the model-input frame and ``labels (b, P)``
      (1 foreground, 0 background, -1 padding that is ignored);
    - ``boxes (b, 4)`` as x1, y1, x2, y2 in the same frame;
    - ``masks (b, 1, 4h, 4w)`` low-resolution mask logits (e.g. a previous prediction).

    Returns ``sparse (b, T, C)`` with ``T = P (+1 pad when there is no box) (+2 box corners)`` and
    ``dense (b, C, h, w)``, where ``(h, w)`` is the image-embedding size passed in.
    """

    def __init__(self, embed_dim: int = 256, mask_in_chans: int = 16, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even for sin/cos position features, got {embed_dim}")
        if mask_in_chans % 4:
            raise ValueError(f"mask_in_chans must be a multiple of 4, got {mask_in_chans}")
        self.embed_dim = embed_dim
        self.pe_layer = RandomFourierPositionEncoding(embed_dim // 2)
        # negative point, positive point, box top-left, box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            act(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            act(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_pe(self, embed_size: tuple[int, int]) -> torch.Tensor:
        """Position encoding of the image-embedding grid: ``(1, C, h, w)``."""
        return self.pe_layer.grid(embed_size).unsqueeze(0)

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool,
                     image_size: tuple[int, int]) -> torch.Tensor:
        """``points (b, P, 2), labels (b, P)`` -> ``(b, P + pad, C)``."""
        points = points.float() + 0.5  # pixel index -> pixel centre
        labels = labels.to(points.device)
        if pad:
            # Without a box the decoder was trained with one extra "not a point" token.
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), PAD_LABEL)], dim=1)
        emb = self.pe_layer.points(points, image_size)
        is_pad = (labels == PAD_LABEL).unsqueeze(-1)
        emb = torch.where(is_pad, self.not_a_point_embed.weight.to(emb.dtype), emb)
        emb = emb + (labels == NEGATIVE_LABEL).unsqueeze(-1) * self.point_embeddings[0].weight
        emb = emb + (labels == POSITIVE_LABEL).unsqueeze(-1) * self.point_embeddings[1].weight
        return emb

    def embed_boxes(self, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """``boxes (b, 4)`` -> corner tokens ``(b, 2, C)``."""
        corners = boxes.float().reshape(-1, 2, 2) + 0.5
        emb = self.pe_layer.points(corners, image_size)
        corner_kind = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return emb + corner_kind

    def forward(self, points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None,
                masks: torch.Tensor | None, image_size: tuple[int, int], embed_size: tuple[int, int],
                batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` is the row count used when no prompt is given at all."""
        batch = next((t.shape[0] for t in (points, boxes, masks) if t is not None), batch)
        device = self.no_mask_embed.weight.device
        tokens = [torch.empty(batch, 0, self.embed_dim, device=device)]
        if points is not None:
            if labels is None:
                raise ValueError("points need labels (1 foreground, 0 background, -1 padding)")
            tokens.append(self.embed_points(points, labels, pad=boxes is None, image_size=image_size))
        if boxes is not None:
            tokens.append(self.embed_boxes(boxes, image_size))
        sparse = torch.cat(tokens, dim=1)

        h, w = embed_size
        if masks is not None:
            if masks.shape[-2:] != (4 * h, 4 * w):
                raise ValueError(
                    f"mask_inputs must be {4 * h}x{4 * w} (4x the image embedding) for this input size, "
                    f"got {tuple(masks.shape[-2:])}"
                )
            dense = self.mask_downscaling(masks.to(self.no_mask_embed.weight.dtype))
        else:
            # a copy, not a view of the parameter: views of parameters made under no_grad confuse
            # autograd-based tools (torch.utils.flop_counter's module tracker)
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)  # a broadcast view
            if not torch.is_grad_enabled():
                # a view of a parameter made under no_grad requires grad yet has no grad_fn, which
                # autograd-based module hooks (the FLOP counter's module tracker) reject
                dense = dense.detach()
        return sparse, dense
