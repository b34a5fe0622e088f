"""The depth-alignment UNet (``depth_alignment.scale_map_estimator``, spec §4.3): parameters only.

Upstream evaluates it only when a ground-truth depth is given (training). It is built here so that the
model's state_dict has exactly the checkpoint's keys; calling it is an error.
"""

from __future__ import annotations

import itertools
import logging

import torch
from torch import nn

from .decoder import GROUP_NORM_EPS, group_norm_residual_block

logger = logging.getLogger(__name__)

_WIDTHS = (16, 32, 64, 128, 256)
_GROUPS = 4


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Sequential(
            nn.Conv2d(2, _WIDTHS[0], 3, padding=1),
            nn.GroupNorm(_GROUPS, _WIDTHS[0], eps=GROUP_NORM_EPS),
            nn.ReLU(),
        )
        # Each down step: avg-pool (index 0, no keys), then two residual blocks (the first widens).
        self.convs_down = nn.ModuleList(
            nn.Sequential(
                nn.AvgPool2d(2),
                group_norm_residual_block(w_in, w_in, w_out, _GROUPS),
                group_norm_residual_block(w_out, w_out // 2, w_out, _GROUPS),
            )
            for w_in, w_out in itertools.pairwise(_WIDTHS)
        )


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # Each up step: nearest ×2 (index 0, no keys), concat with the skip, two residual blocks.
        steps = []
        for k, (w_in, w_out) in enumerate(zip(_WIDTHS[:0:-1], _WIDTHS[-2::-1], strict=True)):
            w_cat = w_in if k == 0 else 2 * w_in
            steps.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    group_norm_residual_block(w_cat, w_out // 2, w_out, _GROUPS),
                    group_norm_residual_block(w_out, w_out // 2, w_out, _GROUPS),
                )
            )
        self.convs_up = nn.ModuleList(steps)
        self.conv_out = nn.Sequential(
            nn.GroupNorm(_GROUPS, 2 * _WIDTHS[0], eps=GROUP_NORM_EPS),
            nn.ReLU(),
            nn.Conv2d(2 * _WIDTHS[0], _WIDTHS[0], 1),
            nn.GroupNorm(_GROUPS, _WIDTHS[0], eps=GROUP_NORM_EPS),
            nn.ReLU(),
        )


class LearnedAlignment(nn.Module):
    """UNet that would predict a depth scale map from two inverse depths; never evaluated at inference."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _Encoder()
        self.decoder = _Decoder()
        self.conv_out = nn.Conv2d(_WIDTHS[0], 1, 1)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("depth alignment is used only in training with ground-truth depth")


class DepthAlignment(nn.Module):
    """Holds ``scale_map_estimator``; at inference (no ground truth) the depth passes through unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.scale_map_estimator = LearnedAlignment()

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        return depth
