"""Strict loading of a SHARP state_dict into RGBGaussianPredictor, with a readable key report.

Every key must match by name and shape, as upstream's strict ``load_state_dict``. Tolerated: the tensors that
inference never uses (both ViT classifier heads and the depth-alignment UNet) may be missing from the file;
they are then left at their initial values (they are never evaluated).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ..errors import CheckpointError

logger = logging.getLogger(__name__)

# Unused at inference (spec §3): dropping them from a file is fine, keeping them is fine too.
_ENCODERS = "monodepth_model.monodepth_predictor.encoder."
TOLERATED_PREFIXES = (
    _ENCODERS + "patch_encoder.head.",
    _ENCODERS + "image_encoder.head.",
    "depth_alignment.",
)
_SHOWN = 5


def is_tolerated(key: str) -> bool:
    return key.startswith(TOLERATED_PREFIXES)


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN])
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{len(keys)} ({shown}{more})"


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "the checkpoint") -> None:
    """Copy ``state_dict`` into ``model`` after checking every key and shape.

    Args:
        model: the predictor (any nn.Module whose state_dict names are the checkpoint's).
        state_dict: key -> tensor, as read from the file.
        source: how to name the file in messages.

    Raises:
        CheckpointError: a key is missing (other than the tolerated unused ones), unexpected or of the wrong
            shape; the message names the first few keys and the count, and says what to do.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not is_tolerated(k)]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mis_shaped:
        problems.append(f"wrong shapes: {_listing(mis_shaped)}")
    if problems:
        raise CheckpointError(
            f"{source} is not a SHARP checkpoint for this model: {'; '.join(problems)}. "
            "Use the official file sharp_2572gikvuh.pt (or a state_dict saved from this model with the same "
            "preset), and delete or replace the file if it is damaged."
        )
    dropped = [k for k in expected if k not in state_dict]
    if dropped:
        logger.info("%d unused tensors absent from %s (classifier heads / depth alignment)", len(dropped), source)
    # A model built on the meta device takes the file's tensors as its parameters (no second 2.8 GB copy).
    on_meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict(dict(state_dict), strict=False, assign=on_meta)
    if on_meta:
        _materialise_leftovers(model)


def _materialise_leftovers(model: nn.Module) -> None:
    """Give the tolerated, never-evaluated parameters absent from the file real (zero) storage."""
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_meta:
                setattr(module, name, nn.Parameter(torch.zeros(param.shape, dtype=param.dtype), requires_grad=False))
