"""PredictorConfig: the hyper-parameters of the SHARP predictor, as frozen data with named presets.

``default`` is the published model (spec §3-§4). ``tiny`` keeps every block and the sliding-pyramid geometry
(5x5 + 3x3 + 1 patches, interior padding grid/8 and grid/4) at a fraction of the width and resolution, so tests
of the CLI, server and add-on can run the real code path in well under a second per image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch

PresetName = Literal["default", "tiny"]

# Receives named intermediate tensors during a forward (for tests and diagnostics). It must not modify them.
Observer = Callable[[str, torch.Tensor], None]


@dataclass(frozen=True)
class PredictorConfig:
    """Hyper-parameters of RGBGaussianPredictor.

    Attributes:
        name: preset name, for messages.
        resolution: internal square image size in pixels (the photo is resized to it).
        vit_size: input size of each ViT (one pyramid patch), = resolution / 4.
        vit_patch: ViT patch size in pixels.
        vit_dim, vit_depth, vit_heads, vit_mlp_ratio: ViT width, block count, heads, MLP ratio.
        vit_num_classes: width of the (never applied) classifier head; it exists for the checkpoint keys.
        vit_taps: patch-encoder blocks whose residual stream is kept; the first two feed the latent maps.
        encoder_dims: channels of the five SPN outputs e0..e4.
        mono_dim: width of the monodepth decoder.
        gauss_dim: width of the Gaussian decoder.
        gauss_head_dim: channels of the texture / geometry features.
        num_groups: GroupNorm groups in the Gaussian heads.
        num_layers: Gaussian layers per 2x2 cell.
    """

    name: str = "default"
    resolution: int = 1536
    vit_size: int = 384
    vit_patch: int = 16
    vit_dim: int = 1024
    vit_depth: int = 24
    vit_heads: int = 16
    vit_mlp_ratio: float = 4.0
    vit_num_classes: int = 21841
    vit_taps: tuple[int, ...] = (5, 11)
    encoder_dims: tuple[int, int, int, int, int] = (256, 256, 512, 1024, 1024)
    mono_dim: int = 256
    gauss_dim: int = 128
    gauss_head_dim: int = 32
    num_groups: int = 8
    num_layers: int = 2

    def __post_init__(self) -> None:
        grid = self.vit_grid
        if self.resolution != 4 * self.vit_size:
            raise ValueError(f"resolution {self.resolution} must be 4 x vit_size ({self.vit_size})")
        if self.vit_size % self.vit_patch or grid % 8:
            raise ValueError(f"the ViT token grid ({self.vit_size}/{self.vit_patch}) must be a multiple of 8")
        # Merged level 0 has 5*grid - 8*(grid/8) = 4*grid tokens per side; three 2x upsamplings must bring it to
        # resolution/2 (e0), so resolution = 64 * grid, i.e. 16-pixel tokens.
        if self.resolution != 64 * grid:
            raise ValueError(f"resolution {self.resolution} must be 64 x the token grid ({grid}); use vit_patch 16")
        if len(self.vit_taps) < 2 or max(self.vit_taps) >= self.vit_depth:
            raise ValueError(f"vit_taps {self.vit_taps} needs two block indices below vit_depth {self.vit_depth}")

    @property
    def vit_grid(self) -> int:
        """Tokens per side of one ViT input."""
        return self.vit_size // self.vit_patch

    @property
    def num_gaussians(self) -> int:
        return self.num_layers * (self.resolution // 2) ** 2


PRESETS: dict[str, PredictorConfig] = {
    "default": PredictorConfig(),
    # 16-pixel tokens at 128 px -> an 8x8 grid: padding 1 (level 0) and 2 (level 1), merged 32 = 512/16.
    "tiny": PredictorConfig(
        name="tiny",
        resolution=512,
        vit_size=128,
        vit_patch=16,
        vit_dim=64,
        vit_depth=3,
        vit_heads=2,
        vit_num_classes=10,
        vit_taps=(0, 1),
        encoder_dims=(16, 16, 32, 64, 64),
        mono_dim=16,
        gauss_dim=8,  # narrower than e0, so feature_model.decoder.convs.0 exists as in the default
        gauss_head_dim=8,
        num_groups=4,
    ),
}


def get_config(name: str) -> PredictorConfig:
    """The named preset; raises ValueError listing the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown predictor preset {name!r}; known: {', '.join(PRESETS)}") from None


_POS_EMBED = "monodepth_model.monodepth_predictor.encoder.patch_encoder.pos_embed"


def config_for_state_dict(state_dict: Mapping[str, torch.Tensor]) -> PredictorConfig | None:
    """The preset whose patch-encoder ``pos_embed`` shape (1, 1 + grid², dim) matches, or None."""
    pos = state_dict.get(_POS_EMBED)
    if pos is None:
        return None
    for config in PRESETS.values():
        if tuple(pos.shape) == (1, 1 + config.vit_grid**2, config.vit_dim):
            return config
    return None


def vit_param_count(config: PredictorConfig) -> int:
    """Parameters of one ViT (spec §13: 326,126,929 for the default preset)."""
    d, hidden = config.vit_dim, int(config.vit_dim * config.vit_mlp_ratio)
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (hidden * d + hidden) + (d * hidden + d)
    embed = d * 3 * config.vit_patch**2 + d + d + (1 + config.vit_grid**2) * d
    return embed + config.vit_depth * block + 2 * d + config.vit_num_classes * (d + 1)
