"""Numerical precision of inference, decided in one place: parameter dtype, TF32 and autocast.

This version has one policy, ``fp32``: float32 everywhere with TF32 off, so CUDA results match the CPU
reference to ~1e-5 (the reference's own CUDA default lets cuDNN use TF32, which costs ~1e-3). A faster
policy (bf16 autocast) is meant to be added here as another entry of :data:`POLICIES`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

logger = logging.getLogger(__name__)

PrecisionName = Literal["fp32"]


@dataclass(frozen=True)
class Precision:
    """How to run the network.

    Attributes:
        name: policy name.
        dtype: parameter and activation dtype.
        allow_tf32: let CUDA matmuls and cuDNN convolutions use TF32.
        autocast_dtype: dtype for torch.autocast, or None for no autocast.
    """

    name: str
    dtype: torch.dtype = torch.float32
    allow_tf32: bool = False
    autocast_dtype: torch.dtype | None = None


POLICIES: dict[str, Precision] = {"fp32": Precision("fp32")}
DEFAULT = POLICIES["fp32"]


def get_precision(name: str) -> Precision:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown precision {name!r}; known: {', '.join(POLICIES)}") from None


@contextlib.contextmanager
def inference_mode(precision: Precision, device: torch.device) -> Iterator[None]:
    """No autograd, the policy's TF32 flags (restored afterwards) and autocast if the policy asks for it."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision.allow_tf32
    torch.backends.cudnn.allow_tf32 = precision.allow_tf32
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            if precision.autocast_dtype is not None:
                stack.enter_context(torch.autocast(device.type, dtype=precision.autocast_dtype))
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
