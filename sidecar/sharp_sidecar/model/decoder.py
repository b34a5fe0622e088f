"""DPT-style multi-resolution decoder (Depth Pro's MultiresConvDecoder) and its residual / fusion blocks.

Used twice: the monodepth decoder (256 channels, spec §4.1.3) and the Gaussian decoder (128 channels, §4.5).
The residual blocks are pre-activation: ``x + residual(x)`` where ``residual`` is a Sequential whose indices
are the checkpoint's (ReLU/GroupNorm positions included), plus an optional 1x1 ``shortcut``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

GROUP_NORM_EPS = 1e-5


class ResidualBlock(nn.Module):
    """y = shortcut(x) + residual(x). ``shortcut`` is nn.Identity unless the widths differ."""

    def __init__(self, residual: nn.Sequential, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.residual = residual
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.residual(x)


def relu_residual_block(dim: int) -> ResidualBlock:
    """ReLU → Conv3×3 → ReLU → Conv3×3 (biases), identity shortcut; keys ``residual.1``, ``residual.3``.

    The ReLUs are not in place: the identity path must see the un-activated input.
    """
    return ResidualBlock(
        nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(dim, dim, 3, padding=1),
        )
    )


def group_norm_residual_block(
    dim_in: int, dim_hidden: int, dim_out: int, num_groups: int, kernel: int = 3
) -> ResidualBlock:
    """GN → ReLU → Conv → GN → ReLU → Conv (biases); keys ``residual.{0,2,3,5}`` and ``shortcut`` if widths differ."""
    residual = nn.Sequential(
        nn.GroupNorm(num_groups, dim_in, eps=GROUP_NORM_EPS),
        nn.ReLU(inplace=False),
        nn.Conv2d(dim_in, dim_hidden, kernel, padding=kernel // 2),
        nn.GroupNorm(num_groups, dim_hidden, eps=GROUP_NORM_EPS),
        nn.ReLU(inplace=False),
        nn.Conv2d(dim_hidden, dim_out, kernel, padding=kernel // 2),
    )
    shortcut = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else None
    return ResidualBlock(residual, shortcut)


class FeatureFusionBlock2d(nn.Module):
    """Fuse a skip into the running features, then optionally upsample 2× (ConvT without bias).

    y = out_conv(deconv(resnet2(x + resnet1(skip)))); without a skip the first addition is left out.
    """

    def __init__(self, dim: int, upsample: bool) -> None:
        super().__init__()
        self.resnet1 = relu_residual_block(dim)
        self.resnet2 = relu_residual_block(dim)
        self.deconv: nn.Module = nn.ConvTranspose2d(dim, dim, 2, stride=2, bias=False) if upsample else nn.Identity()
        self.out_conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resnet1(skip)
        return self.out_conv(self.deconv(self.resnet2(x)))


class MultiresConvDecoder(nn.Module):
    """Coarse-to-fine fusion of the five encoder maps into one map at the finest level's size.

    Args:
        dims_encoder: channels of e0..e4 (finest first).
        dim: decoder width. Level 0 is projected with a 1×1 conv (nn.Identity when the widths already
            match, hence no ``convs.0`` key in the monodepth decoder), levels 1-4 with 3×3 convs; all without bias.
    """

    def __init__(self, dims_encoder: Sequence[int], dim: int) -> None:
        super().__init__()
        convs: list[nn.Module] = [
            nn.Identity() if dims_encoder[0] == dim else nn.Conv2d(dims_encoder[0], dim, 1, bias=False)
        ]
        convs += [nn.Conv2d(d, dim, 3, padding=1, bias=False) for d in dims_encoder[1:]]
        self.convs = nn.ModuleList(convs)
        self.fusions = nn.ModuleList(FeatureFusionBlock2d(dim, upsample=i != 0) for i in range(len(dims_encoder)))

    def forward(self, encodings: Sequence[torch.Tensor]) -> torch.Tensor:
        """e0..e4 (e_k at size S0/2^k) -> (B, dim, S0, S0)."""
        if len(encodings) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} encoder maps, got {len(encodings)}")
        y = self.fusions[-1](self.convs[-1](encodings[-1]))
        for i in range(len(encodings) - 2, -1, -1):
            y = self.fusions[i](y, self.convs[i](encodings[i]))
        return y
