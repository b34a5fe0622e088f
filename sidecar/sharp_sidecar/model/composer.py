"""Gaussian composer (``gaussian_composer``, spec §4.7): base values + activated deltas -> NDC Gaussians.

No parameters. With all deltas zero it returns the base values (opacity 0.5, identity rotation, the averaged
image colour, depth 1/(d₀ + 1e-3), scale = depth/384 before the global scale).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..gaussians import Gaussians
from ..io import conventions
from .initializer import BaseValues

logger = logging.getLogger(__name__)

DELTA_FACTOR_XY = 1e-3
DELTA_FACTOR_Z = 1e-3
DELTA_FACTOR_COLOR = 0.1
DELTA_FACTOR_OPACITY = 1.0
DELTA_FACTOR_SCALE = 1.0
DELTA_FACTOR_QUATERNION = 1.0
MIN_SCALE = 0.0
MAX_SCALE = 10.0
DEPTH_EPS = 1e-3  # z = 1 / (inverse_z + eps): even at δ = 0 the depth is not exactly 1/d₀
COLOR_CLAMP = (0.01, 0.99)


def inverse_softplus(t: torch.Tensor) -> torch.Tensor:
    """log(e^t − 1) = t + log(1 − e^(−t)), with e^(−t) written as σ(−t)/(1 − σ(−t)) as upstream."""
    t = t.clamp(min=1e-6)
    s = torch.sigmoid(-t)
    return t + torch.log(1.0 - s / (1.0 - s))


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """(B, C, L, h, w) -> (B, L·h·w, C); Gaussian index = layer·h·w + row·w + col."""
    return x.permute(0, 2, 3, 4, 1).reshape(x.shape[0], -1, x.shape[1])


class GaussianComposer(nn.Module):
    """Adds the deltas (B, 14, L, h, w) to the base values and returns NDC Gaussians scaled by global_scale."""

    def __init__(self) -> None:
        super().__init__()
        # Scale activation: factor = (max − min)·σ(a·δ + b) + min, with factor(0) = 1.
        self.scale_a = (MAX_SCALE - MIN_SCALE) / (1.0 - MIN_SCALE) / (MAX_SCALE - 1.0)
        ratio = torch.tensor((1.0 - MIN_SCALE) / (MAX_SCALE - MIN_SCALE), dtype=torch.float32, device="cpu")
        self.scale_b = float(torch.logit(ratio))  # float32 then Python float, as upstream

    def forward(self, base: BaseValues, delta: torch.Tensor) -> Gaussians:
        d0 = base.mean_inverse_z_ndc
        x = base.mean_x_ndc + DELTA_FACTOR_XY * delta[:, 0:1]
        y = base.mean_y_ndc + DELTA_FACTOR_XY * delta[:, 1:2]
        inverse_z = F.softplus(inverse_softplus(d0) + DELTA_FACTOR_Z * delta[:, 2:3])
        z = 1.0 / (inverse_z + DEPTH_EPS)
        means = torch.cat([z * x, z * y, z], dim=1)

        factor = (MAX_SCALE - MIN_SCALE) * torch.sigmoid(
            self.scale_a * (DELTA_FACTOR_SCALE * delta[:, 3:6]) + self.scale_b
        ) + MIN_SCALE
        singular_values = base.scales * d0 * z * factor

        quaternions = base.quaternions + DELTA_FACTOR_QUATERNION * delta[:, 6:10]

        c0 = base.colors.clamp(*COLOR_CLAMP)
        colors_srgb = torch.sigmoid(torch.logit(c0) + DELTA_FACTOR_COLOR * delta[:, 10:13])
        colors = conventions.srgb_to_linear(colors_srgb)

        opacities = torch.sigmoid(
            torch.logit(base.opacities).view(1, 1, 1, 1, 1) + DELTA_FACTOR_OPACITY * delta[:, 13:14]
        )

        gs = base.global_scale[:, None, None]
        return Gaussians(
            means=_flatten(means) * gs,
            singular_values=_flatten(singular_values) * gs,
            quaternions=_flatten(quaternions),
            colors=_flatten(colors),
            opacities=_flatten(opacities)[..., 0],
        )
