"""The Gaussians a render draws, on the render device, from a PLY or from the last prediction.

Colour handling follows the reference: SHARP PLYs store the SH-DC of **sRGB** colour
(``color_space`` 0); colours are converted to linear RGB on load, rasterised linear, and encoded back
to sRGB on output. A PLY whose ``color_space`` element says 1 is taken as linear. Generic 3DGS PLYs
(no ``color_space`` element) are treated as sRGB, as 3DGS training tools write them.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import BadPlyError
from ..io import conventions, ply, trajectory

if TYPE_CHECKING:
    from ..gaussians import Gaussians

logger = logging.getLogger(__name__)

# A generic PLY carries no camera: assume the reference's default lens (30 mm full-frame equivalent).
DEFAULT_FOCAL_35MM = 30.0
DEFAULT_GENERIC_SIZE = (1280, 720)


@dataclass
class RenderScene:
    """Activated Gaussians ready to rasterise (all float32 on one device).

    Attributes:
        means: (N, 3) positions, metres, OpenCV frame of the source camera.
        quats: (N, 4) w-first rotations (any norm; the rasterisers normalise).
        scales: (N, 3) linear standard deviations, metres.
        opacities: (N,) in [0, 1].
        colors: (N, 3) linear RGB.
        image_wh: the source image size (W, H), or None when unknown (generic PLY).
        focal_px: the source focal length in pixels, or None when unknown.
        source: where it came from (a path or "last prediction"), for messages.
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor
    image_wh: tuple[int, int] | None
    focal_px: float | None
    source: str

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device: torch.device | str) -> RenderScene:
        means, quats, scales, opacities, colours = (
            t.to(device) for t in (self.means, self.quats, self.scales, self.opacities, self.colors)
        )
        return RenderScene(
            means, quats, scales, opacities, colours, image_wh=self.image_wh, focal_px=self.focal_px, source=self.source
        )


def scene_from_ply(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> RenderScene:
    """Load a 3DGS PLY (SHARP's or generic) for rendering.

    Raises:
        BadPlyError: the file is not a readable Gaussian-splat PLY.
    """
    try:
        data = ply.read_gaussians(path)
    except ply.PlyError as exc:
        raise BadPlyError(f"{exc}. Pass a 3D Gaussian splat PLY such as `sharp predict` writes.") from exc
    colors = conventions.sh_dc_to_rgb(data.f_dc.astype(np.float32))
    if data.color_space != ply.COLOR_SPACE_LINEAR:
        colors = conventions.srgb_to_linear(colors)
    image_wh: tuple[int, int] | None = None
    focal: float | None = None
    if data.camera is not None:
        image_wh = data.camera.image_size
        focal = float(data.camera.K[0, 0])
    arrays = (
        data.means,
        data.quats_wxyz,
        np.exp(data.log_scales),
        conventions.sigmoid(data.opacity_logits),
        colors,
    )
    means, quats, scales, opacities, colours = (
        torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device) for a in arrays
    )
    logger.info("loaded %d Gaussians from %s", data.count, path)
    return RenderScene(
        means, quats, scales, opacities, colours, image_wh=image_wh, focal_px=focal, source=str(Path(path))
    )


def scene_from_gaussians(
    gaussians: Gaussians, image_wh: tuple[int, int], focal_px: float, device: torch.device | str | None = None
) -> RenderScene:
    """The first batch item of the predictor's metric Gaussians (already linear RGB), without a copy
    when ``device`` is where they already are."""
    fields = (gaussians.means, gaussians.quaternions, gaussians.singular_values, gaussians.opacities, gaussians.colors)
    means, quats, scales, opacities, colours = (t[0] if device is None else t[0].to(device) for t in fields)
    return RenderScene(
        means, quats, scales, opacities, colours, image_wh=image_wh, focal_px=float(focal_px), source="last prediction"
    )


def default_focal_px(width: int, height: int) -> float:
    """Focal length in pixels of a 30 mm full-frame-equivalent lens for an image of this size."""
    return DEFAULT_FOCAL_35MM / conventions.diagonal_35mm_mm() * math.hypot(width, height)


def scene_trajectory(
    scene: RenderScene,
    params: trajectory.TrajectoryParams | None = None,
    resolution: tuple[int, int] | None = None,
) -> trajectory.Trajectory:
    """The reference camera path for this scene (spec §9).

    The depth quantiles come from the z of all means (z > 0). The source camera's size and focal length
    set the offsets and K; a generic PLY without them uses ``resolution`` (default 1280×720) with a
    30 mm-equivalent focal length. With ``resolution``, K is rescaled to it (the field of view is kept).
    """
    z = scene.means[:, 2].detach().to("cpu", torch.float32).numpy()
    try:
        quantiles = trajectory.depth_quantiles(z)
    except ValueError as exc:
        raise BadPlyError(f"{scene.source}: {exc}; nothing to render from the source camera") from exc
    image_wh = scene.image_wh
    focal = scene.focal_px
    if image_wh is None or focal is None:
        image_wh = resolution or DEFAULT_GENERIC_SIZE
        focal = default_focal_px(*image_wh)
        logger.info("%s has no camera metadata: assuming %dx%d, f = %.1f px", scene.source, *image_wh, focal)
    params = params or trajectory.TrajectoryParams()
    return trajectory.reference_trajectory(quantiles, image_wh, focal, params, render_wh=resolution)
