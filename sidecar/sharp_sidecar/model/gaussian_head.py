"""Gaussian decoder (``feature_model``, spec §4.5) and the delta prediction head (``prediction_head``, §4.6)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from .config import Observer, PredictorConfig
from .decoder import FeatureFusionBlock2d, MultiresConvDecoder, group_norm_residual_block

logger = logging.getLogger(__name__)

# Delta channels per Gaussian: mean (x, y, inverse depth), scale ×3, quaternion ×4, colour ×3, opacity.
GEOMETRY_CHANNELS = 3
TEXTURE_CHANNELS = 11
DELTA_CHANNELS = GEOMETRY_CHANNELS + TEXTURE_CHANNELS


class SkipConvEncoder(nn.Module):
    """Conv 2×2 stride 2 (bias) from the feature input straight to the decoder's resolution."""

    def __init__(self, dim_in: int, dim_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def feature_head(dim: int, dim_out: int, num_groups: int) -> nn.Sequential:
    """[GroupNorm pre-activation residual block dim→dim/2→dim] ×2 → ReLU → Conv1×1 dim→dim_out → ReLU."""
    return nn.Sequential(
        group_norm_residual_block(dim, dim // 2, dim, num_groups),
        group_norm_residual_block(dim, dim // 2, dim, num_groups),
        nn.ReLU(),
        nn.Conv2d(dim, dim_out, 1),
        nn.ReLU(),
    )


class GaussianDensePredictionTransformer(nn.Module):
    """SPN maps + feature input -> texture and geometry features (B, head_dim, R/2, R/2) each."""

    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        dim = config.gauss_dim
        self.decoder = MultiresConvDecoder(config.encoder_dims, dim)
        self.upsample = nn.Identity()  # the decoder already works at R/2 = the Gaussian grid (stride 2)
        self.image_encoder = SkipConvEncoder(3 + config.num_layers, dim, stride=2)
        self.fusion = FeatureFusionBlock2d(dim, upsample=False)
        self.texture_head = feature_head(dim, config.gauss_head_dim, config.num_groups)
        self.geometry_head = feature_head(dim, config.gauss_head_dim, config.num_groups)

    def forward(
        self, encodings: list[torch.Tensor], feature_input: torch.Tensor, observe: Observer | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: encodings e0..e4; feature_input (B, 3 + L, R, R). Returns (texture, geometry) features."""
        decoded = self.upsample(self.decoder(encodings))
        fused = self.fusion(decoded, self.image_encoder(feature_input))
        texture = self.texture_head(fused)
        geometry = self.geometry_head(fused)
        if observe is not None:
            observe("texture_features", texture)
            observe("geometry_features", geometry)
        return texture, geometry


class DirectPredictionHead(nn.Module):
    """Two 1×1 convs -> deltas (B, 14, L, h, w); channel = property·L + layer before the reshape."""

    def __init__(self, dim_in: int, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.geometry_prediction_head = nn.Conv2d(dim_in, GEOMETRY_CHANNELS * num_layers, 1)
        self.texture_prediction_head = nn.Conv2d(dim_in, TEXTURE_CHANNELS * num_layers, 1)

    def forward(self, texture: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        b, _, h, w = geometry.shape
        geo = self.geometry_prediction_head(geometry).view(b, GEOMETRY_CHANNELS, self.num_layers, h, w)
        tex = self.texture_prediction_head(texture).view(b, TEXTURE_CHANNELS, self.num_layers, h, w)
        return torch.cat([geo, tex], dim=1)
