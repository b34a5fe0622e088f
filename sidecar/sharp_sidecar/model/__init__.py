"""The SHARP predictor network in torch (timm / Depth Pro style); attribute names are the checkpoint keys."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from ..errors import CheckpointError
from .checkpoint import load_into
from .config import PRESETS, Observer, PredictorConfig, config_for_state_dict, get_config
from .predictor import RGBGaussianPredictor

logger = logging.getLogger(__name__)

__all__ = [
    "PRESETS",
    "Observer",
    "PredictorConfig",
    "RGBGaussianPredictor",
    "config_for_state_dict",
    "create_predictor",
    "get_config",
    "load_into",
    "predictor_from_state_dict",
]


def create_predictor(
    config: PredictorConfig | str = "default",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> RGBGaussianPredictor:
    """Build an (untrained) predictor in eval mode on ``device``.

    Args:
        config: a PredictorConfig or a preset name ("default", "tiny").
        device: where the parameters live.
        dtype: parameter dtype (float32 for this version's path).
    """
    if isinstance(config, str):
        config = get_config(config)
    model = RGBGaussianPredictor(config)
    return model.to(device=device, dtype=dtype).eval()


def predictor_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    source: str = "the checkpoint",
    config: PredictorConfig | None = None,
) -> RGBGaussianPredictor:
    """Recognise the preset from the tensor shapes (unless ``config`` is given), build it, load strictly.

    Raises:
        CheckpointError: no preset matches, or a key is missing / unexpected / mis-shaped.
    """
    config = config or config_for_state_dict(state_dict)
    if config is None:
        raise CheckpointError(
            f"{source} is not a SHARP checkpoint: its patch-encoder pos_embed is missing or matches no known "
            f"preset ({', '.join(PRESETS)}). Use the official file sharp_2572gikvuh.pt."
        )
    with torch.device("meta"):  # no random init of 702 M parameters that the file replaces
        model = RGBGaussianPredictor(config)
    load_into(model, state_dict, source)
    logger.info("loaded %s (%s preset)", source, config.name)
    return model.to(device=device, dtype=dtype).eval()
