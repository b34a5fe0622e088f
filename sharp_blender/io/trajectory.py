"""The reference's preview camera paths (spec sharp-model.md §9), in plain numpy float32.

Shared by the add-on (Add Camera Path keyframes) and the sidecar (``sharp render``), shipped there as
``sharp_sidecar.io.trajectory``. No bpy, no torch.

Conventions: every camera is an OpenCV camera (x right, y down, z forward) in the *splat frame*, i.e.
the frame of the SHARP Gaussians, where the source camera sits at the origin looking down +z with the
identity extrinsics. A view matrix is the 4×4 world(splat)-to-camera transform that gsplat takes.

The four trajectory types offset the eye around the source camera by at most (ox, oy, oz) metres and
always look at one point on the optical axis, ``(0, 0, max(2, depth_q0.1))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .conventions import OPENCV_TO_BLENDER

TRAJECTORY_TYPES = ("swipe", "shake", "rotate", "rotate_forward")
DEFAULT_TRAJECTORY = "rotate_forward"
DEFAULT_FPS = 30
# Depth quantiles of the scene: "min" drives the offsets, "focus" the look-at distance.
DEPTH_QUANTILES = (0.001, 0.1, 0.999)
MIN_FOCUS_DISTANCE_M = 2.0
# The reference halves images taller than this before rendering.
MAX_RENDER_HEIGHT = 3000
WORLD_UP_CV = (0.0, -1.0, 0.0)

Vector = Sequence[float] | npt.NDArray[np.floating]


@dataclass(frozen=True)
class TrajectoryParams:
    """The reference's ``TrajectoryParams`` defaults (60 frames of rotate_forward).

    Attributes:
        type: one of :data:`TRAJECTORY_TYPES`.
        max_disparity: lateral offset as a fraction of the image diagonal (in focal lengths) at the
            nearest depth (the 0.001 quantile).
        max_zoom: forward offset as a fraction of the nearest depth (rotate_forward only).
        distance_m: constant forward offset of every eye, metres.
        num_steps: frames per repeat.
        num_repeats: how many times the motion is repeated.
    """

    type: str = DEFAULT_TRAJECTORY
    max_disparity: float = 0.08
    max_zoom: float = 0.15
    distance_m: float = 0.0
    num_steps: int = 60
    num_repeats: int = 1

    def __post_init__(self) -> None:
        if self.type not in TRAJECTORY_TYPES:
            raise ValueError(f"unknown trajectory {self.type!r}; choose one of {', '.join(TRAJECTORY_TYPES)}")
        if self.num_steps < 1 or self.num_repeats < 1:
            raise ValueError(f"num_steps and num_repeats must be >= 1, got {self.num_steps} and {self.num_repeats}")

    @property
    def num_frames(self) -> int:
        return self.num_steps * self.num_repeats


@dataclass
class Trajectory:
    """A camera path ready to render.

    Attributes:
        viewmats: (T, 4, 4) float32 world-to-camera matrices (OpenCV axes, splat frame).
        K: (3, 3) float32 render intrinsics, pixels.
        width, height: render size in pixels.
        eyes: (T, 3) float32 eye positions, metres.
        target: (3,) float32 look-at point, metres.
        params: what produced it.
    """

    viewmats: np.ndarray
    K: np.ndarray
    width: int
    height: int
    eyes: np.ndarray
    target: np.ndarray
    params: TrajectoryParams = field(default_factory=TrajectoryParams)

    @property
    def num_frames(self) -> int:
        return len(self.viewmats)


def depth_quantiles(z: np.ndarray, quantiles: Sequence[float] = DEPTH_QUANTILES) -> np.ndarray:
    """Quantiles of the positive depths, as the reference computes them (linear interpolation).

    Args:
        z: (N,) depths (the z of the Gaussian means in the source camera frame), metres.
        quantiles: which quantiles, in [0, 1].

    Returns:
        (len(quantiles),) float64.

    Raises:
        ValueError: when no depth is positive (nothing in front of the camera).
    """
    z = np.asarray(z, dtype=np.float32).ravel()
    z = z[z > 0]
    if z.size == 0:
        raise ValueError("the scene has no Gaussian in front of the camera (no positive depth)")
    # torch.quantile sorts and interpolates linearly in float32; numpy's default method is the same rule.
    return np.quantile(z, np.asarray(quantiles, dtype=np.float64)).astype(np.float64)


def max_offsets(
    image_wh: tuple[int, int], focal_px: float, depth_min: float, params: TrajectoryParams = TrajectoryParams()
) -> np.ndarray:
    """The largest eye offsets (ox, oy, oz) in metres.

    Args:
        image_wh: the original image size (W, H), pixels.
        focal_px: focal length, pixels.
        depth_min: the scene's 0.001 depth quantile, metres.
        params: trajectory parameters.

    Returns:
        (3,) float64: lateral, lateral, forward offsets.
    """
    width, height = image_wh
    diagonal = math.sqrt((width / focal_px) ** 2 + (height / focal_px) ** 2)
    lateral = params.max_disparity * diagonal * depth_min
    forward = params.max_zoom * depth_min
    return np.array([lateral, lateral, forward], dtype=np.float64)


def _linspace(start: float | np.floating, stop: float | np.floating, num: int) -> np.ndarray:
    return np.linspace(start, stop, num, dtype=np.float32)


def eye_positions(params: TrajectoryParams, offsets: Vector) -> np.ndarray:
    """Eye positions of each frame.

    Args:
        params: trajectory type and counts.
        offsets: (ox, oy, oz) from :func:`max_offsets`, metres.

    Returns:
        (num_steps·num_repeats, 3) float32, metres, OpenCV axes of the source camera.
    """
    ox, oy, oz = (np.float32(v) for v in offsets)
    dist = np.float32(params.distance_m)
    total = params.num_frames
    two_pi = np.float32(2.0 * math.pi)
    eyes = np.zeros((total, 3), dtype=np.float32)
    eyes[:, 2] = dist
    if params.type == "swipe":
        eyes[:, 0] = np.tile(_linspace(-ox, ox, params.num_steps), params.num_repeats)
    elif params.type == "shake":
        half = total // 2
        eyes[:half, 0] = ox * np.sin(two_pi * _linspace(0.0, params.num_repeats, half))
        eyes[half:, 1] = oy * np.sin(two_pi * _linspace(0.0, params.num_repeats, total - half))
    else:
        t = _linspace(0.0, params.num_repeats, total)
        eyes[:, 0] = ox * np.sin(two_pi * t)
        if params.type == "rotate":
            eyes[:, 1] = oy * np.cos(two_pi * t)
        else:  # rotate_forward
            eyes[:, 2] = dist + oz * (np.float32(1.0) - np.cos(two_pi * t)) / np.float32(2.0)
    return eyes


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def look_at_viewmats(eyes: np.ndarray, target: Vector, up: Vector = WORLD_UP_CV) -> np.ndarray:
    """World-to-camera matrices of cameras at ``eyes`` looking at ``target`` (OpenCV axes).

    Args:
        eyes: (T, 3) eye positions, metres.
        target: (3,) look-at point, metres.
        up: world up; OpenCV's y points down, so the reference uses (0, -1, 0).

    Returns:
        (T, 4, 4) float32 view matrices ``[Rᵀ, -Rᵀe; 0 0 0 1]`` with ``R = [right, down, forward]``.
    """
    eyes = np.asarray(eyes, dtype=np.float32).reshape(-1, 3)
    target_v = np.asarray(target, dtype=np.float32).reshape(1, 3)
    up_v = np.broadcast_to(np.asarray(up, dtype=np.float32), eyes.shape)
    forward = _normalise(target_v - eyes)
    right = _normalise(np.cross(forward, up_v))
    down = np.cross(forward, right)
    rotation_t = np.stack([right, down, forward], axis=1)  # rows = columns of the camera-to-world R
    view = np.zeros((len(eyes), 4, 4), dtype=np.float32)
    view[:, :3, :3] = rotation_t
    view[:, :3, 3] = -np.einsum("tij,tj->ti", rotation_t, eyes)
    view[:, 3, 3] = 1.0
    return view


def render_resolution(image_wh: tuple[int, int]) -> tuple[int, int]:
    """The reference's render size: the input, halved if taller than 3000 px, then made even."""
    width, height = (int(v) for v in image_wh)
    if height > MAX_RENDER_HEIGHT:
        width, height = width // 2, height // 2
    return width + width % 2, height + height % 2


def render_intrinsics(focal_px: float, image_wh: tuple[int, int], render_wh: tuple[int, int]) -> np.ndarray:
    """The reference's render K: principal point ((W−1)/2, (H−1)/2), rows scaled to the render size.

    Note the (W−1)/2, unlike the W/2 of the PLY intrinsics (spec §12 quirk 1).

    Returns:
        (3, 3) float32.
    """
    width, height = image_wh
    K = np.array(
        [[focal_px, 0.0, (width - 1) / 2.0], [0.0, focal_px, (height - 1) / 2.0], [0.0, 0.0, 1.0]], dtype=np.float32
    )
    K[0] *= np.float32(render_wh[0] / width)
    K[1] *= np.float32(render_wh[1] / height)
    return K


def scale_intrinsics(K: np.ndarray, from_wh: tuple[int, int], to_wh: tuple[int, int]) -> np.ndarray:
    """K for another output size of the same view (rows scaled like :func:`render_intrinsics`)."""
    out = np.array(K, dtype=np.float32, copy=True)
    out[0] *= np.float32(to_wh[0] / from_wh[0])
    out[1] *= np.float32(to_wh[1] / from_wh[1])
    return out


def reference_trajectory(
    quantiles: Vector,
    image_wh: tuple[int, int],
    focal_px: float,
    params: TrajectoryParams = TrajectoryParams(),
    render_wh: tuple[int, int] | None = None,
) -> Trajectory:
    """The path ``sharp render`` draws for a scene.

    Args:
        quantiles: the scene's depth quantiles (0.001, 0.1, 0.999) from :func:`depth_quantiles`.
        image_wh: the source image size (W, H) the Gaussians were predicted from.
        focal_px: the source focal length in pixels (the reference rounds it to float32).
        params: trajectory parameters.
        render_wh: output size; default the reference's :func:`render_resolution`.

    Returns:
        The trajectory (view matrices, K, size).
    """
    focal = float(np.float32(focal_px))
    depth_min, depth_focus = float(quantiles[0]), float(quantiles[1])
    eyes = eye_positions(params, max_offsets(image_wh, focal, depth_min, params))
    target = np.array([0.0, 0.0, max(MIN_FOCUS_DISTANCE_M, depth_focus)], dtype=np.float32)
    wh = render_wh or render_resolution(image_wh)
    return Trajectory(
        viewmats=look_at_viewmats(eyes, target),
        K=render_intrinsics(focal, image_wh, wh),
        width=int(wh[0]),
        height=int(wh[1]),
        eyes=eyes,
        target=target,
        params=params,
    )


def camera_worlds_from_viewmats(viewmats: np.ndarray, splat_world: np.ndarray | None = None) -> np.ndarray:
    """Blender camera object matrices for OpenCV view matrices given in a splat object's frame.

    ``camera_world = splat_world @ inv(viewmat) @ diag(1, −1, −1, 1)``.

    Args:
        viewmats: (T, 4, 4) world(splat)-to-camera, OpenCV axes.
        splat_world: (4, 4) the splat object's ``matrix_world``; identity when None.

    Returns:
        (T, 4, 4) float64 ``matrix_world`` of a Blender camera (looking down its local −z).
    """
    inverse = np.linalg.inv(np.asarray(viewmats, dtype=np.float64).reshape(-1, 4, 4))
    worlds: np.ndarray = inverse @ np.asarray(OPENCV_TO_BLENDER, dtype=np.float64)
    if splat_world is not None:
        worlds = np.asarray(splat_world, dtype=np.float64) @ worlds
    return worlds


def viewmats_from_camera_worlds(camera_worlds: np.ndarray, splat_world: np.ndarray | None = None) -> np.ndarray:
    """OpenCV view matrices relative to a splat object: ``diag(1,−1,−1,1) @ inv(cam) @ splat``.

    Args:
        camera_worlds: (T, 4, 4) Blender camera ``matrix_world`` per frame.
        splat_world: (4, 4) the splat object's ``matrix_world``; identity when None.

    Returns:
        (T, 4, 4) float32 view matrices for the renderer.
    """
    inverse = np.linalg.inv(np.asarray(camera_worlds, dtype=np.float64).reshape(-1, 4, 4))
    view: np.ndarray = np.asarray(OPENCV_TO_BLENDER, dtype=np.float64) @ inverse
    if splat_world is not None:
        view = view @ np.asarray(splat_world, dtype=np.float64)
    return view.astype(np.float32)
