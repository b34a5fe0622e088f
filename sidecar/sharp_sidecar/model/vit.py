"""ViT-L/16 (DINOv2-style, timm names) as used twice by the sliding-pyramid encoder (spec §4.1.1).

Attribute names are timm's ``VisionTransformer`` names, so the state-dict keys equal the checkpoint's:
``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2,
mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm``, ``head``. The classifier ``head`` is never applied; it exists only
because the checkpoint carries it.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

LAYER_NORM_EPS = 1e-6  # timm's LayerNorm default; torch's own default (1e-5) would shift every token


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch convolution: (n, 3, S, S) -> (n, (S/patch)², dim), row-major tokens."""

    def __init__(self, patch: int, dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention through F.scaled_dot_product_attention (scale 1/sqrt(head_dim))."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        # (n, L, 3*dim) -> (3, n, heads, L, head_dim)
        qkv = self.qkv(x).reshape(n, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(n, tokens, dim))


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) form, as timm
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + γ1·Attn(LN(x)), then x + γ2·MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """Fixed-size ViT with a class token and learned absolute position embedding (no interpolation).

    Args:
        img_size: input side in pixels (384 for the published model).
        patch: patch side in pixels (16).
        dim, depth, num_heads, mlp_ratio: width, block count, heads, MLP ratio.
        num_classes: classifier width; the head is kept for the checkpoint but never applied.
    """

    def __init__(
        self, img_size: int, patch: int, dim: int, depth: int, num_heads: int, mlp_ratio: float, num_classes: int
    ) -> None:
        super().__init__()
        self.grid = img_size // patch
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, dim))
        self.blocks = nn.Sequential(*(Block(dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(dim, num_classes) if num_classes else nn.Identity()
        self.channels_last_maps = False  # see to_feature_map

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) image -> (n, 1 + grid², dim) tokens: patches, class token first, plus position."""
        tokens = self.patch_embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embed

    def forward_intermediates(
        self, x: torch.Tensor, indices: tuple[int, ...] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the ViT, keeping the residual stream after the given blocks.

        Args:
            x: (n, 3, S, S) images.
            indices: 0-based block indices whose output is kept (before the final norm, class token included).

        Returns:
            The final-normed tokens (n, 1 + grid², dim) and one (n, 1 + grid², dim) tensor per index, in the
            order of ``indices``.
        """
        x = self.embed(x)
        kept: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in indices:
                kept[i] = x
        return self.norm(x), [kept[i] for i in indices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) -> final-normed tokens (n, 1 + grid², dim); the classifier head is not applied."""
        return self.forward_intermediates(x)[0]

    def to_feature_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """Drop the class token and reshape row-major: (n, 1 + grid², dim) -> (n, dim, grid, grid).

        Contiguous (as timm's forward_intermediates) unless ``channels_last_maps`` is set: a channels-last map
        would send the Gaussian heads' GroupNorms to torch's channels-last CPU kernel, ~15x less accurate in
        float32. The channels-last fast path sets it, and gets the token grid as an NHWC view without a copy.
        """
        n, _, dim = tokens.shape
        grid = tokens[:, 1:].reshape(n, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        return grid if self.channels_last_maps else grid.contiguous()
