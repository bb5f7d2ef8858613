"""SAM mask decoder: two-way transformer over prompt + output tokens, hypernetwork mask heads, IoU head.

Segment Anything, Kirillov et al., arXiv:2304.02643 (Sec. 3 and App. A, "Lightweight mask decoder").

An IoU token and ``num_multimask_outputs + 1`` mask tokens are prepended to the prompt tokens. After
the two-way transformer, the image tokens are upscaled 4x by two transposed convs, each mask token goes
through its own 3-layer MLP to a ``C/8`` vector, and its dot product with every upscaled pixel is that
mask's logit. Mask token 0 is the single-mask output; tokens 1.. are the ambiguity-aware multimask
outputs. Attribute names follow the segment-anything checkpoint layout.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nn.common import MLP, LayerNorm2d, exporting
from zoo.nn.fast_cpu import deconv_act
from zoo.nn.sam_transformer import TwoWayTransformer

__all__ = ["MaskDecoder"]


class MaskDecoder(nn.Module):
    """Predict masks and their IoU from image embeddings and prompt embeddings.

    ``forward(image_embeddings (B, C, h, w), image_pe (1, C, h, w), sparse (B*N, T, C), dense (B*N, C, h, w),
    multimask_output)`` -> ``masks (B*N, K, 4h, 4w)`` logits and ``iou (B*N, K)``, ``K = num_multimask_outputs``
    or 1. Each image's embedding is shared by its ``N`` consecutive prompt rows.
    """

    def __init__(self, embed_dim: int = 256, depth: int = 2, num_heads: int = 8, mlp_dim: int = 2048,
                 downsample_rate: int = 2, num_multimask_outputs: int = 3, iou_head_depth: int = 3,
                 iou_head_hidden_dim: int = 256, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        if embed_dim % 8:
            raise ValueError(f"embed_dim must be a multiple of 8 (upscaling to C/4 then C/8), got {embed_dim}")
        self.embed_dim = embed_dim
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(depth, embed_dim, num_heads, mlp_dim, nn.ReLU, downsample_rate)
        self.iou_token = nn.Embedding(1, embed_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, embed_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, embed_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(embed_dim // 4),
            act(),
            nn.ConvTranspose2d(embed_dim // 4, embed_dim // 8, kernel_size=2, stride=2),
            act(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(embed_dim, embed_dim, embed_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(embed_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                dense: torch.Tensor, multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        rows = sparse.shape[0]
        if rows % image_embeddings.shape[0]:
            raise ValueError(
                f"{rows} prompt rows cannot be split evenly over {image_embeddings.shape[0]} images"
            )
        masks, iou = self.predict_all(image_embeddings, image_pe, sparse, dense)
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou[:, keep]

    def predict_all(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                    dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every mask token's output: ``masks (B*N, num_mask_tokens, 4h, 4w)``, ``iou (B*N, num_mask_tokens)``."""
        rows = sparse.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(rows, -1, -1).to(sparse.dtype), sparse], dim=1)

        per_image = rows // image_embeddings.shape[0]
        # an exported graph takes one prompt row per image (zoo.export.sam): a traced size check would
        # be frozen to the example's answer anyway
        shared = not exporting() and per_image > 1
        src = image_embeddings.repeat_interleave(per_image, dim=0) if shared else image_embeddings
        # summed in channels-last memory: the transformer reads it as (B, h*w, C) tokens without a copy
        src = (src.permute(0, 2, 3, 1) + dense.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1:1 + self.num_mask_tokens]

        upscaled = self.upscale(src.transpose(1, 2).reshape(b, c, h, w))  # (B*N, C/8, 4h, 4w)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (B*N, num_mask_tokens, C/8)
        size = upscaled.shape[-2:]
        if upscaled.is_contiguous(memory_format=torch.channels_last):
            # (B, 4h*4w, C/8) is then a view: multiply there instead of copying the big map to NCHW
            pixels = upscaled.permute(0, 2, 3, 1).reshape(b, -1, upscaled.shape[1])
            masks = (pixels @ hyper_in.transpose(1, 2)).transpose(1, 2).reshape(b, -1, *size)
        else:
            masks = (hyper_in @ upscaled.flatten(2)).view(b, -1, *size)
        return masks, self.iou_prediction_head(iou_token_out)

    def upscale(self, x: torch.Tensor) -> torch.Tensor:
        """``output_upscaling`` (deconv, LayerNorm2d, act, deconv, act): ``(B, C, h, w) -> (B, C/8, 4h, 4w)``.
        The image tokens arrive channels-last (a view of ``(B, h*w, C)``), which the deconvs and the
        LayerNorm2d keep; the last deconv and its activation are one oneDNN call on CPU."""
        up = self.output_upscaling
        return deconv_act(up[2](up[1](up[0](x))), up[3], up[4])
