"""Multi-layer initializer (``init_model``, spec §4.4): base Gaussians per 2×2 cell and the decoder's input.

No parameters. Depth is normalised so the nearest point sits at ≈1; ``global_scale`` undoes that at the end.
Layout of the base values: (B, property, layer, row, col).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class BaseValues:
    """What the composer adds its deltas to (h = w = R/2 cells, L layers).

    Attributes:
        mean_x_ndc, mean_y_ndc: (B, 1, L, h, w) cell centres in NDC, (−1, −1) = top-left image corner.
        mean_inverse_z_ndc: (B, 1, L, h, w) normalised disparity (max-pooled 1/normalised depth).
        scales: (B, 1, L, h, w) base scale (1/disparity)·(2·stride/R).
        colors: (B, 3, L, h, w) 2×2-averaged image in [0, 1] (sRGB-encoded values).
        quaternions: (1, 4, 1, 1, 1) identity (w first).
        opacities: (1,) base opacity.
        feature_input: (B, 3 + L, R, R) [image, 1/normalised depth] mapped v -> 2v − 1.
        global_scale: (B,) metric scale = nearest depth (+1e-6).
    """

    mean_x_ndc: torch.Tensor
    mean_y_ndc: torch.Tensor
    mean_inverse_z_ndc: torch.Tensor
    scales: torch.Tensor
    colors: torch.Tensor
    quaternions: torch.Tensor
    opacities: torch.Tensor
    feature_input: torch.Tensor
    global_scale: torch.Tensor


class MultiLayerInitializer(nn.Module):
    """Base values from the [0, 1] image and the metric depth of each layer ("surface_min" option)."""

    def __init__(self, num_layers: int = 2, stride: int = 2) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.stride = stride

    def forward(self, image: torch.Tensor, depth: torch.Tensor) -> BaseValues:
        """Args: image (B, 3, R, R) in [0, 1]; depth (B, L, R, R) metric [m]."""
        b, layers, size, _ = depth.shape
        if layers != self.num_layers:
            raise ValueError(f"expected {self.num_layers} depth layers, got {layers}")

        # Normalise by the nearest depth over both layers; the far clamp bounds 1/disparity blow-ups.
        nearest = depth.flatten(1).min(dim=1).values
        depth_factor = 1.0 / (nearest + 1e-6)
        depth_n = (depth * depth_factor[:, None, None, None]).clamp(max=100.0)
        global_scale = 1.0 / depth_factor
        inverse_depth = 1.0 / depth_n

        # Max of disparity = min of depth per cell ("surface_min"): (B, 1, L, h, w).
        disparity = F.max_pool2d(inverse_depth, self.stride, self.stride).unsqueeze(1)
        cells = size // self.stride

        # Cell centres in pixels are 1, 3, …, R − 1 (stride 2): NDC x = 2u/R − 1; x along the last axis.
        centres = torch.arange(cells, device=depth.device, dtype=depth.dtype) * self.stride + self.stride / 2
        ndc = 2.0 * centres / size - 1.0
        mean_x = ndc.view(1, 1, 1, 1, cells).expand(b, 1, layers, cells, cells)
        mean_y = ndc.view(1, 1, 1, cells, 1).expand(b, 1, layers, cells, cells)

        scales = (1.0 / disparity) * (2.0 * self.stride / size)
        colors = F.avg_pool2d(image, self.stride, self.stride).unsqueeze(2).expand(-1, -1, layers, -1, -1)
        quaternions = torch.tensor([1.0, 0.0, 0.0, 0.0], device=depth.device, dtype=depth.dtype).view(1, 4, 1, 1, 1)
        opacities = torch.full((1,), min(1.0 / layers, 0.5), device=depth.device, dtype=depth.dtype)
        feature_input = torch.cat([image, inverse_depth], dim=1) * 2.0 - 1.0
        return BaseValues(
            mean_x_ndc=mean_x,
            mean_y_ndc=mean_y,
            mean_inverse_z_ndc=disparity,
            scales=scales,
            colors=colors,
            quaternions=quaternions,
            opacities=opacities,
            feature_input=feature_input,
            global_scale=global_scale,
        )
