"""Photo -> metric Gaussians for one image on a loaded predictor (spec §2, §4, §6), with progress and timings.

Stages, in order: ``resize`` (uint8 -> [0, 1] -> bilinear, align_corners=True, to R×R), ``encoder`` (SPN),
``decoders`` (monodepth + Gaussian decoders), ``composer``, ``unprojection``, and ``ply`` when saving.
Cancellation is checked between stages; precision is taken from :mod:`sharp_sidecar.inference.precision`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .. import errors
from ..gaussians import Gaussians, save_ply, unproject
from ..model import Observer, RGBGaussianPredictor
from .precision import DEFAULT, Precision, inference_mode

logger = logging.getLogger(__name__)

DeviceName = Literal["auto", "cuda", "mps", "cpu"]
# progress(stage, overall fraction done in [0, 1] or None, message)
ProgressFn = Callable[[str, "float | None", str], None]
CancelledFn = Callable[[], bool]

STAGES = ("resize", "encoder", "decoders", "composer", "unprojection")
# Share of the CPU wall time spent before each stage starts (measured on the full model), for progress bars.
_STAGE_START = {"resize": 0.0, "encoder": 0.01, "decoders": 0.75, "composer": 0.96, "unprojection": 0.97}


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto" -> cuda, else mps, else cpu. A named device that is not available raises DeviceError."""
    mps_ok = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise errors.DeviceError(
                "CUDA was requested but is not available (no NVIDIA GPU, driver, or CUDA build of torch). "
                "Use --device cpu, or --device auto to pick the best available device."
            )
        return torch.device("cuda")
    if name == "mps":
        if not mps_ok:
            raise errors.DeviceError(
                "MPS (Apple GPU) was requested but is not available on this machine or torch build. "
                "Use --device cpu, or --device auto."
            )
        return torch.device("mps")
    raise errors.DeviceError(f"unknown device {name!r}: use auto, cuda, mps or cpu")


def preprocess(
    rgb: np.ndarray | torch.Tensor,
    f_px: float,
    resolution: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) uint8 (numpy, or a tensor on any device) + f_px -> image (1, 3, R, R) in [0, 1] and
    disparity_factor (1,) = f_px / W.

    The resize stretches (aspect ratio not kept), bilinear with align_corners=True, no antialiasing, as upstream.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {tuple(rgb.shape)} {rgb.dtype}")
    pixels = rgb if isinstance(rgb, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(rgb))
    image = pixels.to(device).permute(2, 0, 1)[None].to(dtype) / 255.0
    image = F.interpolate(image, size=(resolution, resolution), mode="bilinear", align_corners=True)
    disparity_factor = torch.tensor([f_px / rgb.shape[1]], dtype=dtype, device=device)
    return image, disparity_factor


@dataclass
class Prediction:
    """Metric Gaussians of one photo and what is needed to write them.

    Attributes:
        gaussians: metric Gaussians, OpenCV camera frame, batch of 1.
        f_px: focal length of the original image [px].
        image_size: original (W, H) [px].
        timings: seconds per stage.
        finite: whether the decoders' outputs and the Gaussians were all finite (False: the network
            overflowed its dtype, e.g. an activation above float16's 65504; see overflow_guard).
        precision: the policy that computed it.
        notes: what a user should know about how it was computed (a recomputation, a path switch).
    """

    gaussians: Gaussians
    f_px: float
    image_size: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)
    finite: bool = True
    precision: str = ""
    notes: list[str] = field(default_factory=list)


def all_finite(*tensors: torch.Tensor) -> torch.Tensor:
    """One boolean tensor: every element of every tensor is finite (no host sync until it is read)."""
    flags = [torch.isfinite(t).all() for t in tensors]
    return torch.stack(flags).all()


@contextlib.contextmanager
def _oom_as_error(device: torch.device) -> Iterator[None]:
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise errors.OutOfMemoryError(
            f"the GPU ran out of memory ({device}): the full model needs about 6 GB free. Close other programs "
            "using the GPU, or run on the CPU with --device cpu."
        ) from exc
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():
            raise
        raise errors.OutOfMemoryError(
            f"{device} ran out of memory ({exc}). Close other programs using it, or use --device cpu."
        ) from exc


class _StageClock:
    """Stage durations without stalling the GPU: CUDA events at stage ends, read once at the end.

    Synchronising after every stage (the obvious way) leaves the GPU idle while the CPU launches the next
    stage's first kernels: ~5 ms per photo on the H100 fast path. Elsewhere: wall time at each stage end.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.names: list[str] = []
        self.marks: list[Any] = []
        self.start: Any = self._now()

    def _now(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def mark(self, name: str) -> None:
        self.names.append(name)
        self.marks.append(self._now())

    def seconds(self) -> dict[str, float]:
        if self.cuda and self.marks:
            self.marks[-1].synchronize()
        times: dict[str, float] = {}
        previous = self.start
        for name, mark in zip(self.names, self.marks, strict=True):
            times[name] = previous.elapsed_time(mark) / 1000.0 if self.cuda else mark - previous
            previous = mark
        return times


def predict(
    model: RGBGaussianPredictor,
    rgb: np.ndarray | torch.Tensor,
    f_px: float,
    *,
    precision: Precision = DEFAULT,
    progress: ProgressFn | None = None,
    cancelled: CancelledFn | None = None,
    observe: Observer | None = None,
) -> Prediction:
    """Run the predictor on one photo and unproject to metric space.

    Args:
        model: a loaded predictor in eval mode.
        rgb: (H, W, 3) uint8 sRGB pixels: numpy, or a tensor (on the model's device after a GPU decode).
        f_px: focal length of this image [px].
        precision: the precision policy.
        progress: called at the start of each stage and at the end ("done", 1.0).
        cancelled: polled between stages; when it returns True, errors.Cancelled is raised.
        observe: receives named intermediates (tests); does not change the computation.

    Raises:
        errors.Cancelled, errors.OutOfMemoryError.
    """
    device = next(model.parameters()).device
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    clock = _StageClock(device)

    def stage(name: str) -> None:
        if cancelled is not None and cancelled():
            raise errors.Cancelled(f"cancelled before the {name} stage")
        if progress is not None:
            progress(name, _STAGE_START[name], f"{name} ({width}x{height} photo)")

    done = clock.mark
    with _oom_as_error(device), inference_mode(precision, device):
        stage("resize")
        # The photo stays float32 (the initializer's colours); the network casts to its own dtype.
        image, disparity_factor = preprocess(rgb, f_px, model.config.resolution, device)
        done("resize")
        stage("encoder")
        encodings = model.encode(image, observe)
        done("encoder")
        stage("decoders")
        decoded = model.decode(image, encodings, disparity_factor, observe)
        del image
        done("decoders")
        stage("composer")
        # Overflow shows as inf/NaN in the network's outputs (before sigmoids could hide it); read after the sync.
        base = decoded.base
        finite = all_finite(decoded.delta, base.mean_inverse_z_ndc, base.scales, base.global_scale)
        ndc = model.compose(decoded)
        del decoded, base
        if observe is not None:
            for name in ("means", "singular_values", "quaternions", "colors", "opacities"):
                observe(f"ndc_{name}", getattr(ndc, name))
        done("composer")
        stage("unprojection")
        method = "compiled" if precision.compile and device.type == "cuda" else "closed_form"
        metric = unproject(ndc, f_px, (width, height), method)
        finite = finite & all_finite(metric.means, metric.singular_values, metric.colors, metric.opacities)
        done("unprojection")
        timings = clock.seconds()  # waits for the GPU: the Gaussians are ready when predict returns
        is_finite = bool(finite)
    if progress is not None:
        progress("done", 1.0, f"{sum(timings.values()):.1f} s")
    logger.info("predicted %d Gaussians: %s", metric.num_gaussians, _format(timings))
    return Prediction(metric, float(f_px), (width, height), timings, is_finite, precision.name)


def save_prediction(prediction: Prediction, path: str | os.PathLike[str], plain: bool = False) -> None:
    """Write the prediction as a SHARP PLY (atomically) and add the ``ply`` stage time."""
    start = time.perf_counter()
    save_ply(prediction.gaussians, path, prediction.f_px, prediction.image_size, plain=plain)
    prediction.timings["ply"] = time.perf_counter() - start


def _format(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
