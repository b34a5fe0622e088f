"""Numerical precision of inference, decided in one place: parameter dtype, TF32 and autocast.

Policies (:data:`POLICIES`):

- ``fp32``: float32 everywhere with TF32 off, so CUDA results match the CPU reference to ~1e-5 (the
  reference's own CUDA default lets cuDNN use TF32, which costs ~1e-3).
- ``fp16``: the fast path, default on CUDA (chosen by measured accuracy: 7x smaller errors than bf16, renders
  >= 54 dB against FP32's where bf16 reaches 41 dB, for ~4 ms). Guarded: a photo whose decoder outputs are
  not finite (an activation above 65504) is computed again in its ``fallback`` policy, and the result says so.
- ``bf16``: as ``fp16`` in bfloat16 (fp32's range, 3 fewer mantissa bits). The ViTs and both decoders hold bfloat16 weights and run in
  bfloat16 (flash attention through SDPA, channels_last convolutions, torch.compile'd blocks, GELU in the
  GEMM epilogue, cuDNN's fused convolution + ReLU; JPEGs decoded by nvJPEG on the GPU); depth
  inversion, the initializer's normalisation, the composer and the unprojection stay float32 (float64 for
  the covariance decomposition), as the spec's delicate points need.
- ``bf16-eager``: ``bf16`` without torch.compile (no compile wait; for machines without a working Triton).
- ``bf16-graphs``: ``bf16`` with CUDA graphs over the compiled units (experimental, see the performance notes).
- ``fp16-eager``: ``fp16`` without torch.compile. The eager policies are also what a process runs while the
  compiled kernels are built in the background (see warm_start).

cuDNN's benchmark mode is off in every policy: it cost ~6 s on the first photo of the eager path, and the
compiled path measured no gain from it (docs/performance-notes.md); ``$SHARP_CUDNN_BENCHMARK=1`` turns it on.

The network's dtype is carried by its parameters (weights are loaded straight in it); the model code casts
at the float32 islands, so the same code runs every policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

logger = logging.getLogger(__name__)

PrecisionName = Literal["auto", "fp32", "bf16", "bf16-eager", "fp16", "fp16-eager", "bf16-graphs"]
BENCHMARK_ENV = "SHARP_CUDNN_BENCHMARK"


@dataclass(frozen=True)
class Precision:
    """How to run the network.

    Attributes:
        name: policy name.
        dtype: parameter and activation dtype.
        allow_tf32: let CUDA matmuls and cuDNN convolutions use TF32.
        autocast_dtype: dtype for torch.autocast, or None for no autocast.
        channels_last: store convolution weights (hence activations) NHWC, the tensor cores' layout.
        compile: torch.compile the ViT blocks, decoders and heads (CUDA only; compiled once per process).
        cudnn_benchmark: let cuDNN time its algorithms on the first call of each shape (seconds, once).
        cuda_graphs: compile with CUDA graphs (``reduce-overhead``): replays instead of kernel launches.
        fused_kernels: on CUDA, GELU in fc1's GEMM epilogue and cuDNN's fused convolution + bias + ReLU
            (see fastpath.use_fused_kernels); GELU becomes its tanh form, within 5e-4.
        gpu_jpeg: decode colour JPEGs with nvJPEG on the GPU (see gpu_jpeg) instead of Pillow on the CPU.
        fallback: the policy a photo is computed again in when this one's outputs are not finite (None: none).
    """

    name: str
    dtype: torch.dtype = torch.float32
    allow_tf32: bool = False
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False
    cuda_graphs: bool = False
    fused_kernels: bool = False
    gpu_jpeg: bool = False
    fallback: str | None = None

    def decode_device(self, device: torch.device) -> torch.device | None:
        """Where photos are decoded for this policy on ``device``: the GPU itself once nvJPEG has been started
        (gpu_jpeg.warm_up), or None for Pillow."""
        from ..image import gpu_jpeg

        return device if self.gpu_jpeg and device.type == "cuda" and gpu_jpeg.is_warm(device) else None


def _fast(name: str, dtype: torch.dtype, compile: bool, graphs: bool = False) -> Precision:
    # float16 overflows above 65504: recompute in bfloat16 (float32's range); bfloat16 falls back to float32.
    return Precision(
        name,
        dtype,
        allow_tf32=True,
        channels_last=True,
        compile=compile,
        cudnn_benchmark=os.environ.get(BENCHMARK_ENV, "") == "1",
        cuda_graphs=graphs,
        fused_kernels=True,
        gpu_jpeg=True,
        fallback="bf16-eager" if dtype == torch.float16 else "fp32",
    )


POLICIES: dict[str, Precision] = {
    "fp32": Precision("fp32"),
    "bf16": _fast("bf16", torch.bfloat16, compile=True),
    "bf16-eager": _fast("bf16-eager", torch.bfloat16, compile=False),
    "fp16": _fast("fp16", torch.float16, compile=True),
    "fp16-eager": _fast("fp16-eager", torch.float16, compile=False),
    "bf16-graphs": _fast("bf16-graphs", torch.bfloat16, compile=True, graphs=True),
}
DEFAULT = POLICIES["fp32"]
FAST = POLICIES["fp16"]
CHOICES = ("auto", *POLICIES)
ENV_VAR = "SHARP_PRECISION"  # overrides "auto" (e.g. for `sharp serve` started by the add-on)


def eager_twin(precision: Precision) -> Precision:
    """The same policy without torch.compile (what runs while the compiled kernels are built)."""
    if not precision.compile:
        return precision
    twin = POLICIES.get(f"{precision.name.split('-')[0]}-eager")
    return twin if twin is not None else dataclasses.replace(precision, name=f"{precision.name}-eager", compile=False)


def get_precision(name: str) -> Precision:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown precision {name!r}; known: {', '.join(CHOICES)}") from None


def resolve_precision(name: str | None, device: torch.device) -> Precision:
    """``auto`` (or None) -> $SHARP_PRECISION if set, else ``fp16`` on a CUDA GPU with bfloat16 (its fallback's
    dtype), else ``fp32``.

    A named policy is taken as asked, except that torch.compile is dropped off CUDA (the CPU gains little
    from it and pays minutes of compile).
    """
    name = name or "auto"
    if name == "auto":
        name = os.environ.get(ENV_VAR, "").strip() or "auto"
    if name == "auto":
        fast = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
        return FAST if fast else DEFAULT
    precision = get_precision(name)
    if precision.compile and device.type != "cuda":
        precision = dataclasses.replace(precision, compile=False)
    return precision


def _new_tf32_api() -> bool:
    return hasattr(torch.backends.cuda.matmul, "fp32_precision")  # torch >= 2.9


def _tf32() -> tuple[str, str]:
    """(matmul, convolution) float32 precision, through torch's newer API where it exists: the legacy
    ``allow_tf32`` flags raise once anything (Inductor, in the background compile) has used the new one."""
    if _new_tf32_api():
        return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision  # type: ignore[attr-defined]
    legacy = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    return ("tf32" if legacy[0] else "ieee"), ("tf32" if legacy[1] else "ieee")


def _set_tf32(matmul: str, conv: str) -> None:
    if _tf32() == (matmul, conv):
        return
    if _new_tf32_api():
        torch.backends.cuda.matmul.fp32_precision = matmul
        torch.backends.cudnn.conv.fp32_precision = conv  # type: ignore[attr-defined]
    else:  # "none" (the new API's "unset") only exists there
        torch.backends.cuda.matmul.allow_tf32 = matmul == "tf32"
        torch.backends.cudnn.allow_tf32 = conv == "tf32"


def apply_flags(precision: Precision) -> None:
    """Set the policy's TF32 and cuDNN flags for the whole process (then every inference_mode leaves them be:
    two threads running the same flags cannot undo each other's)."""
    mode = "tf32" if precision.allow_tf32 else "ieee"
    _set_tf32(mode, mode)
    torch.backends.cudnn.benchmark = precision.cudnn_benchmark


@contextlib.contextmanager
def inference_mode(precision: Precision, device: torch.device) -> Iterator[None]:
    """No autograd, the policy's TF32 / cuDNN flags (restored afterwards) and autocast if the policy asks for it."""
    saved = _tf32()
    benchmark = torch.backends.cudnn.benchmark
    mode = "tf32" if precision.allow_tf32 else "ieee"
    _set_tf32(mode, mode)
    if benchmark != precision.cudnn_benchmark:
        torch.backends.cudnn.benchmark = precision.cudnn_benchmark
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            if precision.autocast_dtype is not None:
                stack.enter_context(torch.autocast(device.type, dtype=precision.autocast_dtype))
            yield
    finally:
        _set_tf32(*saved)
        if torch.backends.cudnn.benchmark != benchmark:
            torch.backends.cudnn.benchmark = benchmark
