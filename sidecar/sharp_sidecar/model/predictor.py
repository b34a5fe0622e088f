"""RGBGaussianPredictor: the whole SHARP network, photo (resized to R×R) -> NDC Gaussians.

Attribute names are the checkpoint's top-level prefixes (``monodepth_model``, ``depth_alignment``,
``init_model``, ``feature_model``, ``prediction_head``, ``gaussian_composer``), so ``state_dict()`` has exactly the
checkpoint's keys. The forward is split into three steps (encode, decode, compose) so that the pipeline can
time them and check for cancellation between them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..gaussians import Gaussians
from .alignment import DepthAlignment
from .composer import GaussianComposer
from .config import Observer, PredictorConfig
from .gaussian_head import DirectPredictionHead, GaussianDensePredictionTransformer
from .initializer import BaseValues, MultiLayerInitializer
from .monodepth import MonodepthWithEncodingAdaptor, disparity_to_depth

logger = logging.getLogger(__name__)


@dataclass
class Decoded:
    """Output of :meth:`RGBGaussianPredictor.decode`: base values and deltas (B, 14, L, R/2, R/2)."""

    base: BaseValues
    delta: torch.Tensor


class RGBGaussianPredictor(nn.Module):
    """SHARP: (B, 3, R, R) image in [0, 1] + disparity factor f_px / W -> Gaussians in NDC·depth space."""

    def __init__(self, config: PredictorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PredictorConfig()
        self.monodepth_model = MonodepthWithEncodingAdaptor(config)
        self.depth_alignment = DepthAlignment()
        self.init_model = MultiLayerInitializer(num_layers=config.num_layers, stride=2)
        self.feature_model = GaussianDensePredictionTransformer(config)
        self.prediction_head = DirectPredictionHead(config.gauss_head_dim, config.num_layers)
        self.gaussian_composer = GaussianComposer()

    def _check_input(self, image: torch.Tensor) -> None:
        r = self.config.resolution
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, r, r):
            raise ValueError(f"expected an image of shape (B, 3, {r}, {r}), got {tuple(image.shape)}")

    def encode(self, image: torch.Tensor, observe: Observer | None = None) -> list[torch.Tensor]:
        """Step 1, the sliding-pyramid encoder: (B, 3, R, R) in [0, 1] -> [e0, …, e4]."""
        self._check_input(image)
        return self.monodepth_model.encode(image, observe)

    def decode(
        self,
        image: torch.Tensor,
        encodings: list[torch.Tensor],
        disparity_factor: torch.Tensor,
        observe: Observer | None = None,
    ) -> Decoded:
        """Step 2, the decoders: disparity -> depth -> base values; Gaussian decoder -> deltas.

        Args:
            image: (B, 3, R, R) in [0, 1].
            encodings: output of :meth:`encode` (the list is emptied to free memory early).
            disparity_factor: (B,) f_px / original width.
        """
        # Depth inversion, the initializer and the composer run in float32 whatever the network's dtype.
        disparity = self.monodepth_model.disparity(encodings, observe).float()
        depth = self.depth_alignment(disparity_to_depth(disparity, disparity_factor.float()))
        del disparity
        if observe is not None:
            observe("depth", depth)
        base = self.init_model(image.float(), depth)
        del depth
        if observe is not None:
            for name in ("mean_x_ndc", "mean_y_ndc", "mean_inverse_z_ndc", "scales", "colors", "quaternions"):
                observe(f"base_{name}", getattr(base, name))
            observe("base_opacities", base.opacities)
            observe("global_scale", base.global_scale)
            observe("feature_input", base.feature_input)
        net_dtype = encodings[0].dtype
        texture, geometry = self.feature_model(encodings, base.feature_input.to(net_dtype), observe)
        encodings.clear()
        delta = self.prediction_head(texture, geometry).float()
        if observe is not None:
            observe("delta", delta)
        return Decoded(base, delta)

    def compose(self, decoded: Decoded) -> Gaussians:
        """Step 3: base values + deltas -> NDC Gaussians (means and scales already times global_scale)."""
        return self.gaussian_composer(decoded.base, decoded.delta)  # type: ignore[no-any-return]

    def forward(
        self, image: torch.Tensor, disparity_factor: torch.Tensor, observe: Observer | None = None
    ) -> Gaussians:
        """(B, 3, R, R) image in [0, 1], (B,) f_px / W -> NDC Gaussians with N = L·(R/2)² per item.

        ``observe``, if given, receives named intermediates (for tests); it does not change the computation.
        """
        encodings = self.encode(image, observe)
        return self.compose(self.decode(image, encodings, disparity_factor, observe))
