"""Monodepth network (spec §4.1): SPN encoder + DPT decoder + two-layer disparity head.

``monodepth_model.monodepth_predictor`` in the checkpoint. Its encoder outputs are reused by the Gaussian
decoder, so :meth:`MonodepthWithEncodingAdaptor.encode` and :meth:`~MonodepthWithEncodingAdaptor.disparity`
are separate steps.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .config import Observer, PredictorConfig
from .decoder import MultiresConvDecoder
from .encoder import SlidingPyramidNetwork

logger = logging.getLogger(__name__)


def disparity_head(dim: int, num_layers: int) -> nn.Sequential:
    """Conv3×3 → ConvT 2×2/2 (bias, no activation between) → Conv3×3 → ReLU → Conv1×1 → ReLU.

    (B, dim, S, S) -> (B, num_layers, 2S, 2S), non-negative. Keys ``0, 1, 2, 4``.
    """
    return nn.Sequential(
        nn.Conv2d(dim, dim // 2, 3, padding=1),
        nn.ConvTranspose2d(dim // 2, dim // 2, 2, stride=2, bias=True),
        nn.Conv2d(dim // 2, dim // 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(dim // 8, num_layers, 1),
        nn.ReLU(),
    )


class MonodepthDensePredictionTransformer(nn.Module):
    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        self.encoder = SlidingPyramidNetwork(config)
        self.decoder = MultiresConvDecoder(config.encoder_dims, config.mono_dim)
        self.head = disparity_head(config.mono_dim, config.num_layers)

    @staticmethod
    def normalize(image: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> [−1, 1] as two float ops (multiply, then add), as upstream."""
        return image * 2.0 + -1.0


class MonodepthWithEncodingAdaptor(nn.Module):
    """Wraps the predictor so the SPN runs once and its maps are shared with the Gaussian decoder."""

    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        self.monodepth_predictor = MonodepthDensePredictionTransformer(config)

    def encode(self, image: torch.Tensor, observe: Observer | None = None) -> list[torch.Tensor]:
        """(B, 3, R, R) image in [0, 1] -> SPN outputs [e0, …, e4]."""
        p = self.monodepth_predictor
        # Normalise in the photo's float32, then cast to the network's dtype (bf16 on the fast path).
        dtype = p.encoder.patch_encoder.cls_token.dtype
        encodings = p.encoder(p.normalize(image).to(dtype), observe)
        if observe is not None:
            for k, e in enumerate(encodings):
                observe(f"e{k}", e)
        return encodings

    def disparity(self, encodings: list[torch.Tensor], observe: Observer | None = None) -> torch.Tensor:
        """SPN outputs -> disparity (B, num_layers, R, R), ≥ 0; channel 0 is the front layer."""
        p = self.monodepth_predictor
        features = p.decoder(encodings)
        if observe is not None:
            observe("mono_decoder", features)
        disparity: torch.Tensor = p.head(features)
        if observe is not None:
            observe("disparity", disparity)
        return disparity


def disparity_to_depth(disparity: torch.Tensor, disparity_factor: torch.Tensor) -> torch.Tensor:
    """Metric depth (B, L, R, R) [m] = (f_px / W) / clamp(disparity, 1e-4, 1e4).

    Args:
        disparity: (B, L, R, R) network disparity.
        disparity_factor: (B,) f_px / original image width.
    """
    return disparity_factor[:, None, None, None] / disparity.clamp(min=1e-4, max=1e4)
