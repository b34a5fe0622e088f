"""Render camera paths of a Gaussian scene to videos: gsplat on CUDA, the plain-torch rasteriser elsewhere.

Conventions (the reference's, spec §9): linear RGB is rasterised over black with RGB+D, eps2d 0,
near plane 0.01; the colour is encoded linear -> sRGB and cast to uint8 by truncation; depth is
Σwᵢzᵢ / max(alpha, 1e-8), shown with Turbo from 0 to min(first frame's max depth, 50 m).

The Gaussians are uploaded once; frames are rendered in batches of cameras; progress is reported per
frame and cancellation is checked between batches. Encoding runs on writer threads, overlapping the
rendering.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import Cancelled, DeviceError, OutOfMemoryError
from ..io import conventions
from . import colormap, rasterize_torch, video
from .render_scene import RenderScene
from .video import DEFAULT_FPS, DEFAULT_PRESET

logger = logging.getLogger(__name__)

Progress = Callable[[str, float | None, str], None]
CancelCheck = Callable[[], bool] | threading.Event | None

EPS2D = 0.0
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
DEFAULT_BATCH = 8


def _no_progress(stage: str, fraction: float | None, message: str) -> None:
    pass


def _cancelled(cancel: CancelCheck) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def pick_device(requested: str | None = None) -> torch.device:
    """``cuda`` if available, else ``mps``, else ``cpu``; or the requested one (checked)."""
    if requested in (None, "", "default", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(str(requested))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested for rendering but this torch has no usable CUDA device; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("MPS was requested for rendering but is not available here; use --device cpu")
    return device


class Rasterizer:
    """Renders batches of cameras: ``(viewmats (B,4,4), Ks (B,3,3)) -> (linear RGB (B,H,W,3), depth (B,H,W))``."""

    name = "base"

    def __init__(self, scene: RenderScene) -> None:
        self.scene = scene

    def raw(
        self, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def render(
        self, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, alpha = self.raw(viewmats, Ks, width, height)
        depth = out[..., 3] / alpha[..., 0].clamp_min(1e-8)
        return out[..., :3], depth


class TorchRasterizer(Rasterizer):
    """The plain-torch fallback (any device; slow)."""

    name = "torch"

    def raw(
        self, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scene
        return rasterize_torch.rasterize(
            s.means, s.quats, s.scales, s.opacities, s.colors, viewmats, Ks, width, height,
            near_plane=NEAR_PLANE, far_plane=FAR_PLANE, eps2d=EPS2D,
        )  # fmt: skip


def gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


class GsplatRasterizer(Rasterizer):
    """gsplat 1.5.3 ``rasterization`` (CUDA). Its first use JIT-compiles the kernels (a minute or more)."""

    name = "gsplat"

    def __init__(self, scene: RenderScene, progress: Progress = _no_progress) -> None:
        super().__init__(scene)
        if scene.device.type != "cuda":
            raise DeviceError("gsplat renders on CUDA only; the scene is on " + str(scene.device))
        if "gsplat.cuda._backend" not in sys.modules:
            progress(
                "compile", None, "preparing gsplat's CUDA kernels (the first use compiles them: about 1-2 minutes)"
            )
        start = time.perf_counter()
        # gsplat reports its compile through rich on stdout, which is the protocol channel of `sharp serve`.
        with contextlib.redirect_stdout(sys.stderr):
            from gsplat.cuda._backend import _C
        if _C is None:
            raise DeviceError("gsplat could not compile its CUDA kernels (is nvcc / the CUDA toolkit installed?)")
        from gsplat import rasterization

        self._rasterization = rasterization
        self.compile_seconds = time.perf_counter() - start
        logger.info("gsplat ready in %.1f s", self.compile_seconds)

    def raw(
        self, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scene
        out, alpha, _ = self._rasterization(
            s.means, s.quats, s.scales, s.opacities, s.colors, viewmats, Ks, width, height,
            near_plane=NEAR_PLANE, far_plane=FAR_PLANE, eps2d=EPS2D, sh_degree=None, packed=False,
            render_mode="RGB+D", rasterize_mode="classic", absgrad=False,
        )  # fmt: skip
        return out, alpha


def make_rasterizer(scene: RenderScene, backend: str = "auto", progress: Progress = _no_progress) -> Rasterizer:
    """gsplat on CUDA when it is installed, else the torch fallback; ``backend`` forces one."""
    if backend not in ("auto", "gsplat", "torch"):
        raise ValueError(f"unknown render backend {backend!r}; use auto, gsplat or torch")
    if backend == "torch":
        return TorchRasterizer(scene)
    if backend == "auto" and (scene.device.type != "cuda" or not gsplat_available()):
        if scene.device.type == "cuda":
            logger.warning("gsplat is not installed: rendering with the slow torch fallback (pip install gsplat)")
        return TorchRasterizer(scene)
    if backend == "gsplat":
        return GsplatRasterizer(scene, progress)
    try:
        return GsplatRasterizer(scene, progress)
    except Exception as exc:  # a failed JIT build (no nvcc, compiler errors) must not stop a preview
        logger.warning("gsplat is unusable here (%s): rendering with the slow torch fallback", exc)
        progress("compile", None, "gsplat could not be prepared: using the slower torch renderer")
        return TorchRasterizer(scene)


def to_srgb_u8(linear: torch.Tensor) -> torch.Tensor:
    """Linear RGB -> sRGB uint8, truncating like the reference (which does not clamp: values are in [0, 1])."""
    return (conventions.linear_to_srgb(linear) * 255.0).clamp_(0.0, 255.0).to(torch.uint8)


@dataclass
class RenderOutputs:
    """Where the frames go. ``video`` and ``depth_video`` are MP4 paths; ``png_dir`` a folder (optional)."""

    video: Path | None
    depth_video: Path | None = None
    png_dir: Path | None = None
    fps: float = DEFAULT_FPS
    preset: str = DEFAULT_PRESET


@dataclass
class RenderResult:
    frames: int
    width: int
    height: int
    backend: str
    outputs: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)


def render_batches(
    rasterizer: Rasterizer,
    viewmats: np.ndarray | torch.Tensor,
    Ks: np.ndarray | torch.Tensor,
    width: int,
    height: int,
    batch: int = DEFAULT_BATCH,
    cancel: CancelCheck = None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(first frame index, linear RGB (B,H,W,3), depth (B,H,W))`` per batch, on the render device.

    Raises:
        Cancelled: checked before every batch.
    """
    device = rasterizer.scene.device
    views = torch.from_numpy(np.array(viewmats, dtype=np.float32)) if isinstance(viewmats, np.ndarray) else viewmats
    intr = torch.from_numpy(np.array(Ks, dtype=np.float32)) if isinstance(Ks, np.ndarray) else Ks
    views = views.to(device, torch.float32).reshape(-1, 4, 4)
    intr = intr.to(device, torch.float32).reshape(-1, 3, 3)
    if len(intr) == 1 and len(views) > 1:
        intr = intr.expand(len(views), 3, 3)
    if len(intr) != len(views):
        raise ValueError(f"{len(views)} view matrices but {len(intr)} intrinsics")
    if not isinstance(rasterizer, GsplatRasterizer):
        batch = 1  # the fallback draws one camera at a time anyway: cancel after every (slow) frame
    for start in range(0, len(views), batch):
        if _cancelled(cancel):
            raise Cancelled(f"render cancelled after {start} of {len(views)} frames")
        try:
            with torch.no_grad():
                rgb, depth = rasterizer.render(views[start : start + batch], intr[start : start + batch], width, height)
        except torch.cuda.OutOfMemoryError as exc:
            raise OutOfMemoryError(
                f"out of memory rendering {width}x{height} on {device}: use a smaller --resolution or batch"
            ) from exc
        yield start, rgb, depth


def render_video(
    rasterizer: Rasterizer,
    viewmats: np.ndarray | torch.Tensor,
    Ks: np.ndarray | torch.Tensor,
    width: int,
    height: int,
    outputs: RenderOutputs,
    progress: Progress = _no_progress,
    cancel: CancelCheck = None,
    batch: int = DEFAULT_BATCH,
) -> RenderResult:
    """Render every camera and write the videos (and PNGs); nothing is left behind on error or cancel.

    Args:
        rasterizer: from :func:`make_rasterizer` (the scene is already on its device).
        viewmats: (T, 4, 4) world-to-camera, OpenCV axes.
        Ks: (T, 3, 3) or (3, 3) intrinsics, pixels.
        width, height: frame size, pixels.
        outputs: what to write.
        progress: ``(stage, fraction, message)`` callback, called once per frame.
        cancel: an Event or a callable; checked between batches.
        batch: cameras per rasteriser call.

    Returns:
        Frame count, size, backend, output paths and timings (seconds).
    """
    total = len(viewmats)
    sinks: dict[str, video.ThreadedSink] = {}
    if outputs.video is not None:
        sinks["video"] = video.ThreadedSink(video.Mp4Writer(outputs.video, outputs.fps, preset=outputs.preset))
    if outputs.depth_video is not None:
        sinks["depth_video"] = video.ThreadedSink(
            video.Mp4Writer(outputs.depth_video, outputs.fps, preset=outputs.preset)
        )
    if outputs.png_dir is not None:
        sinks["png_dir"] = video.ThreadedSink(video.PngSequenceWriter(outputs.png_dir))
    lut = torch.from_numpy(colormap.turbo_lut_u8()).to(rasterizer.scene.device)
    max_depth: float | None = None
    start_time = time.perf_counter()
    render_seconds = 0.0
    try:
        tick = time.perf_counter()
        for first, rgb, depth in render_batches(rasterizer, viewmats, Ks, width, height, batch, cancel):
            if max_depth is None:
                max_depth = colormap.depth_range(depth[0])
            colour_u8 = to_srgb_u8(rgb).cpu().numpy()
            depth_u8 = colormap.colorize_depth(depth, max_depth, lut).cpu().numpy() if "depth_video" in sinks else None
            render_seconds += time.perf_counter() - tick
            for i in range(len(colour_u8)):
                if "video" in sinks:
                    sinks["video"].write(colour_u8[i])
                if "png_dir" in sinks:
                    sinks["png_dir"].write(colour_u8[i])
                if depth_u8 is not None:
                    sinks["depth_video"].write(depth_u8[i])
                done = first + i + 1
                progress("render", done / total, f"frame {done}/{total}")
            tick = time.perf_counter()
        progress("encode", None, "finishing the video files")
        for sink in sinks.values():
            sink.close()
    except BaseException:
        for sink in sinks.values():
            with contextlib.suppress(Exception):
                sink.abort()
        raise
    written = {"video": outputs.video, "depth_video": outputs.depth_video, "png_dir": outputs.png_dir}
    return RenderResult(
        frames=total,
        width=width,
        height=height,
        backend=rasterizer.name,
        outputs={k: str(v) for k, v in written.items() if v is not None and k in sinks},
        timings={"render": render_seconds, "total": time.perf_counter() - start_time},
    )


def render_images(
    rasterizer: Rasterizer, viewmats: Any, Ks: Any, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render cameras to memory: ``(sRGB uint8 (T,H,W,3), depth float32 (T,H,W))``, for tests and previews."""
    colours, depths = [], []
    for _, rgb, depth in render_batches(rasterizer, viewmats, Ks, width, height):
        colours.append(to_srgb_u8(rgb).cpu().numpy())
        depths.append(depth.float().cpu().numpy())
    return np.concatenate(colours), np.concatenate(depths)
