"""Sliding pyramid network (Depth Pro's encoder, spec §4.1.2): two ViTs -> five feature maps e0..e4.

A 3-level image pyramid is cut into overlapping ViT-sized patches (5×5 at full size, 3×3 at half size, the whole
quarter-size image), all run through ``patch_encoder`` as one batch; the patch feature maps are stitched back
with their interior borders trimmed, then projected and upsampled to the five decoder inputs.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import Observer, PredictorConfig
from .vit import VisionTransformer

logger = logging.getLogger(__name__)


def image_pyramid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Half- and quarter-size copies of (B, C, S, S), bilinear, align_corners=False, no antialiasing.

    With exact factors, level 1 averages pixel pairs 2k, 2k+1 and level 2 averages pixels 4k+1, 4k+2 (per axis;
    not a 4×4 box), as upstream.
    """
    level1 = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    level2 = F.interpolate(x, scale_factor=0.25, mode="bilinear", align_corners=False)
    return level1, level2


def patch_offsets(size: int, patch: int, overlap: float) -> list[int]:
    """Top-left offsets of the sliding patches along one axis (stride floor(patch·(1−overlap)))."""
    stride = int(patch * (1.0 - overlap))
    count = math.ceil((size - patch) / stride) + 1
    return [i * stride for i in range(count)]


def split_patches(x: torch.Tensor, patch: int, overlap: float) -> torch.Tensor:
    """(B, C, S, S) -> (n²·B, C, patch, patch), patches row-major, patch-major on the batch axis."""
    offsets = patch_offsets(x.shape[-1], patch, overlap)
    tiles = [x[..., j : j + patch, i : i + patch] for j in offsets for i in offsets]
    return torch.cat(tiles, dim=0)


def merge_patches(x: torch.Tensor, batch: int, padding: int) -> torch.Tensor:
    """Stitch (n²·B, C, g, g) patch maps into (B, C, S, S), trimming ``padding`` cells on interior borders."""
    n = math.isqrt(x.shape[0] // batch)
    if n * n * batch != x.shape[0]:
        raise ValueError(f"{x.shape[0]} patch maps do not form a square grid for batch {batch}")
    rows = []
    for j in range(n):
        row = []
        for i in range(n):
            tile = x[(j * n + i) * batch : (j * n + i + 1) * batch]
            top = padding if j > 0 else 0
            bottom = tile.shape[-2] - (padding if j < n - 1 else 0)
            left = padding if i > 0 else 0
            right = tile.shape[-1] - (padding if i < n - 1 else 0)
            row.append(tile[..., top:bottom, left:right])
        rows.append(torch.cat(row, dim=-1))
    return torch.cat(rows, dim=-2)


def project_upsample(dim_in: int, dim_out: int, upsamplings: int) -> nn.Sequential:
    """1×1 conv dim_in→dim_out then ``upsamplings`` ConvT 2×2/2, all without bias (keys ``.0``, ``.1``…)."""
    layers: list[nn.Module] = [nn.Conv2d(dim_in, dim_out, 1, bias=False)]
    layers += [nn.ConvTranspose2d(dim_out, dim_out, 2, stride=2, bias=False) for _ in range(upsamplings)]
    return nn.Sequential(*layers)


class SlidingPyramidNetwork(nn.Module):
    """The SPN encoder: normalised image (B, 3, R, R) in [−1, 1] -> [e0, …, e4].

    For the default preset: e0 256@768, e1 256@384, e2 512@192, e3 1024@96, e4 1024@48.
    """

    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        c = config
        self.config = config

        def vit() -> VisionTransformer:
            return VisionTransformer(
                c.vit_size, c.vit_patch, c.vit_dim, c.vit_depth, c.vit_heads, c.vit_mlp_ratio, c.vit_num_classes
            )

        self.patch_encoder = vit()
        self.image_encoder = vit()
        d, dims = c.vit_dim, c.encoder_dims
        self.upsample_latent0 = project_upsample(d, dims[0], 3)
        self.upsample_latent1 = project_upsample(d, dims[1], 2)
        self.upsample0 = project_upsample(d, dims[2], 1)
        self.upsample1 = project_upsample(d, dims[3], 1)
        self.upsample2 = project_upsample(d, dims[4], 1)
        self.upsample_lowres = nn.ConvTranspose2d(d, dims[4], 2, stride=2, bias=True)
        self.fuse_lowres = nn.Conv2d(2 * dims[4], dims[4], 1, bias=True)

    def forward(self, x: torch.Tensor, observe: Observer | None = None) -> list[torch.Tensor]:
        """Args: x (B, 3, R, R) normalised image. Returns [e0, e1, e2, e3, e4]."""
        c = self.config
        batch, grid = x.shape[0], c.vit_grid
        # Step 0: the pyramid.
        level1, level2 = image_pyramid(x)

        # Step 1: 25 + 9 + 1 patches through one ViT batch.
        patches0 = split_patches(x, c.vit_size, overlap=0.25)
        patches1 = split_patches(level1, c.vit_size, overlap=0.5)
        n0, n1 = patches0.shape[0], patches1.shape[0]
        tokens, taps = self.patch_encoder.forward_intermediates(
            torch.cat([patches0, patches1, level2], dim=0), c.vit_taps
        )
        del patches0, patches1
        if observe is not None:
            observe("vit_patch_out", self.patch_encoder.to_feature_map(tokens))
            for index, tap in zip(c.vit_taps, taps, strict=True):
                observe(f"vit_patch_block{index}", tap)
        feats = self.patch_encoder.to_feature_map(tokens)
        latent0 = self.patch_encoder.to_feature_map(taps[0][:n0])
        latent1 = self.patch_encoder.to_feature_map(taps[1][:n0])
        del tokens, taps

        # Step 2: stitch. Interior borders lose grid/8 cells at level 0 and grid/4 at level 1 (3 and 6 for 24).
        pad0, pad1 = grid // 8, grid // 4
        e0 = self.upsample_latent0(merge_patches(latent0, batch, pad0))
        e1 = self.upsample_latent1(merge_patches(latent1, batch, pad0))
        del latent0, latent1
        e2 = self.upsample0(merge_patches(feats[:n0], batch, pad0))
        e3 = self.upsample1(merge_patches(feats[n0 : n0 + n1], batch, pad1))
        lowres_patch = self.upsample2(feats[n0 + n1 :])
        del feats

        # Step 3: the whole quarter-size image through the second ViT, fused with the patch encoder's view.
        image_feats = self.image_encoder.to_feature_map(self.image_encoder(level2))
        if observe is not None:
            observe("vit_image_out", image_feats)
        e4 = self.fuse_lowres(torch.cat([lowres_patch, self.upsample_lowres(image_feats)], dim=1))
        return [e0, e1, e2, e3, e4]
