"""OpenCV camera frame <-> Blender: object and camera matrices, intrinsics <-> Blender camera data. No bpy.

Splat data stays in the source camera's OpenCV frame (x right, y down, z forward). The conversion to
Blender lives in object matrices only (``../shared/spec/blender-notes.md`` section 6)::

    world = cam.matrix_world @ OPENCV_TO_BLENDER @ p_cv

The splat mesh stores ``p_cv - origin_cv`` so that the object's origin sits at the scene's centre
(rotating or scaling the object turns the scene about itself); its matrix carries ``T(origin_cv)``.

The **PLY frame** is the file's own world (OpenCV axes; for SHARP's files, identity ``extrinsic``, the
source camera's frame). Import maps it into Blender by one matrix, ``frame`` (the camera at the chosen
spot looking along +Y, times ``OPENCV_TO_BLENDER``); export maps Blender back through ``frame⁻¹``, so an
untouched import exports the numbers it read. ``extrinsic`` E is world -> camera in the PLY frame: the
camera sits at ``frame @ E⁻¹ @ OPENCV_TO_BLENDER`` and the splats where the file puts them.

All matrices are numpy (4, 4) float64 arrays, row-major as in ``mathutils.Matrix``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .io.conventions import OPENCV_TO_BLENDER

logger = logging.getLogger(__name__)

FLIP = np.array(OPENCV_TO_BLENDER, dtype=np.float64)
DEFAULT_SENSOR_MM = 36.0
UNIFORM_SCALE_TOLERANCE = 1e-4


class TransformError(ValueError):
    """A transform that cannot be baked into 3D Gaussians exactly."""


@dataclass(frozen=True)
class CameraSettings:
    """Blender camera + render settings that reproduce a pinhole K on a W x H image."""

    lens: float  # mm
    sensor_width: float  # mm (AUTO fit: applies to the larger, aspect-weighted side)
    sensor_fit: str  # 'AUTO'
    shift_x: float  # fraction of the fitted side
    shift_y: float
    resolution_x: int
    resolution_y: int
    pixel_aspect_x: float  # >= 1; the other is 1
    pixel_aspect_y: float


def camera_settings(
    K: np.ndarray, image_size: Sequence[int], sensor_width: float = DEFAULT_SENSOR_MM
) -> CameraSettings:
    """Blender camera for intrinsics K (OpenCV, pixels, corner-origin) and image size (W, H).

    Non-square pixels (fx != fy) go into the render pixel aspect, which Blender clamps to >= 1, so the
    ratio sits on whichever axis makes it >= 1. With D the larger aspect-weighted side
    ``max(W·ax, H·ay)``: ``fx = lens/sw · D/ax``, ``fy = lens/sw · D/ay``, ``shift_x = (W/2 − cx)·ax/D``,
    ``shift_y = (cy − H/2)·ay/D``.

    Args:
        K: (3, 3) intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels.
        image_size: (W, H) in pixels.
        sensor_width: any positive value; only lens/sensor matters.
    """
    K = np.asarray(K, dtype=np.float64)
    width, height = int(image_size[0]), int(image_size[1])
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if width <= 0 or height <= 0 or fx <= 0 or fy <= 0:
        raise ValueError(f"cannot make a camera from fx={fx}, fy={fy}, image size {width}x{height}")
    ax, ay = (1.0, fx / fy) if fx >= fy else (fy / fx, 1.0)
    fitted = max(width * ax, height * ay)
    return CameraSettings(
        lens=float(fx * ax * sensor_width / fitted),
        sensor_width=float(sensor_width),
        sensor_fit="AUTO",
        shift_x=float((width / 2 - cx) * ax / fitted),
        shift_y=float((cy - height / 2) * ay / fitted),
        resolution_x=width,
        resolution_y=height,
        pixel_aspect_x=float(ax),
        pixel_aspect_y=float(ay),
    )


def intrinsics(
    lens: float,
    sensor_width: float,
    sensor_height: float,
    sensor_fit: str,
    shift_x: float,
    shift_y: float,
    image_size: Sequence[int],
    pixel_aspect: Sequence[float] = (1.0, 1.0),
) -> np.ndarray:
    """K (3, 3) in pixels of a Blender perspective camera rendering an image of (W, H) pixels.

    ``image_size`` is the effective render size (resolution times percentage). The inverse of
    :func:`camera_settings` for AUTO fit; HORIZONTAL and VERTICAL fits are handled as Blender does.
    """
    width, height = float(image_size[0]), float(image_size[1])
    ax, ay = float(pixel_aspect[0]), float(pixel_aspect[1])
    if sensor_fit == "HORIZONTAL":
        fitted, sensor = width * ax, sensor_width
    elif sensor_fit == "VERTICAL":
        fitted, sensor = height * ay, sensor_height
    else:
        fitted, sensor = max(width * ax, height * ay), sensor_width
    return np.array(
        [
            [lens / sensor * fitted / ax, 0.0, width / 2 - shift_x * fitted / ax],
            [0.0, lens / sensor * fitted / ay, height / 2 + shift_y * fitted / ay],
            [0.0, 0.0, 1.0],
        ]
    )


def translation(offset: Sequence[float] | np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = np.asarray(offset, dtype=np.float64)
    return m


def default_camera_matrix(location: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera at ``location`` looking along world +Y, up = +Z (Blender rotation_euler (90°, 0, 0))."""
    rot_x_90 = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    return translation(location) @ rot_x_90


def splat_matrix(camera_world: np.ndarray, origin_cv: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """matrix_world of a splat object whose mesh holds ``p_cv - origin_cv``, seen from ``camera_world``."""
    return np.asarray(camera_world, dtype=np.float64) @ FLIP @ translation(origin_cv)


def ply_frame(camera_world: np.ndarray) -> np.ndarray:
    """PLY frame -> Blender world for an import whose identity-extrinsic camera would sit at ``camera_world``."""
    return np.asarray(camera_world, dtype=np.float64) @ FLIP


# The frame of an import with World Origin placement: (x, y, z) in the PLY -> (x, z, −y) in Blender.
ORIGIN_FRAME = ply_frame(default_camera_matrix())


@dataclass(frozen=True)
class ImportPoses:
    frame: np.ndarray  # PLY frame -> Blender world
    splat: np.ndarray  # matrix_world of the splat object (its data holds p_ply - origin)
    camera: np.ndarray  # matrix_world of the source camera (rigid)


def import_poses(
    camera_world: np.ndarray, extrinsic: np.ndarray | None = None, origin: Sequence[float] = (0.0, 0.0, 0.0)
) -> ImportPoses:
    """Where an import puts the splats and the camera (see the module docstring).

    Args:
        camera_world: where the camera of an identity-extrinsic file goes (placement choice).
        extrinsic: the file's world -> camera (4, 4), a rotation and translation (a uniform scale is
            tolerated and ignored for the camera's pose); None or identity for SHARP's files.
        origin: the scene centre in the PLY frame, subtracted from the stored positions.

    An extrinsic that is no camera pose (singular, mirrored, sheared, non-finite) is ignored with a
    warning: the splats still land where the file says, the camera as for SHARP's files.
    """
    frame = ply_frame(camera_world)
    E = np.eye(4) if extrinsic is None else np.asarray(extrinsic, dtype=np.float64)
    try:
        if not np.all(np.isfinite(E)) or abs(np.linalg.det(E[:3, :3])) < 1e-12:
            raise TransformError("singular or not finite")
        R, _, t = similarity_parts(np.linalg.inv(E))
    except TransformError as exc:
        logger.warning("the PLY's extrinsic is not a camera pose (%s); placing the camera as for identity", exc)
        R, t = np.eye(3), np.zeros(3)
    camera_to_ply = np.eye(4)
    camera_to_ply[:3, :3], camera_to_ply[:3, 3] = R, t
    return ImportPoses(frame, frame @ translation(origin), frame @ camera_to_ply @ FLIP)


@dataclass(frozen=True)
class ExportMaps:
    to_file: np.ndarray  # object-local (the stored data) -> output PLY frame
    change: np.ndarray  # input PLY frame -> output PLY frame (identity for an untouched import)


def export_maps(frame: np.ndarray, object_world: np.ndarray, origin: Sequence[float] = (0.0, 0.0, 0.0)) -> ExportMaps:
    """Blender world -> the PLY frame through ``frame⁻¹``: ``to_file = frame⁻¹ @ matrix_world``."""
    to_file = np.linalg.inv(np.asarray(frame, np.float64)) @ np.asarray(object_world, np.float64)
    return ExportMaps(to_file, to_file @ translation(-np.asarray(origin, np.float64)))


def exported_extrinsic(extrinsic: np.ndarray, change: np.ndarray) -> np.ndarray:
    """The world -> camera of the source camera after the splats moved by ``change`` (a similarity).

    The camera moves with the splats, so the photo still lines up; a scale s is taken as the camera
    seeing a scene s times larger (``diag(s, s, s, 1) @ E @ change⁻¹``), which keeps E a rotation and
    translation and every projection the same.
    """
    _, s, _ = similarity_parts(change)
    scale = np.diag([s, s, s, 1.0])
    return scale @ np.asarray(extrinsic, np.float64) @ np.linalg.inv(np.asarray(change, np.float64))


def view_matrix(camera_world: np.ndarray, object_world: np.ndarray) -> np.ndarray:
    """Object-local -> OpenCV camera (4, 4): ``diag(1,−1,−1,1) @ cam.matrix_world⁻¹ @ obj.matrix_world``.

    For a splat object the local frame is the mesh's (``p_cv - origin_cv``); gsplat-style renderers take
    it as ``viewmat`` together with the mesh positions.
    """
    return FLIP @ np.linalg.inv(np.asarray(camera_world, dtype=np.float64)) @ np.asarray(object_world, np.float64)


_CENTRE_RUN = 64  # splats read together when sampling: neighbours share cache lines, a strided gather does not


def scene_centre(means: np.ndarray, max_samples: int = 65536) -> np.ndarray:
    """A robust centre of the splat means (N, 3): the per-axis median of all of them, or of about
    ``max_samples`` in evenly spaced runs of neighbouring splats when there are more."""
    means = np.asarray(means)
    if len(means) == 0:
        return np.zeros(3)
    if len(means) > max_samples:
        runs = max(1, max_samples // _CENTRE_RUN)
        spacing = len(means) // runs
        run = min(_CENTRE_RUN, spacing)
        offset = (spacing - run) // 2  # the middle of each stretch of the file
        sampled = means[: runs * spacing].reshape(runs, spacing, 3)[:, offset : offset + run]
        sample = sampled.transpose(2, 0, 1).reshape(3, -1)  # one copy: (3, m), each axis contiguous
    else:
        sample = np.ascontiguousarray(means.T)
    # Partitioned in the file's dtype (the middle values are exact); the mean of the two middle ones of
    # an even count is taken in float64, the lower one being the largest value left of the partition.
    half, odd = divmod(sample.shape[1], 2)
    parted = np.partition(sample, half, axis=1)
    upper = parted[:, half].astype(np.float64)
    return upper if odd else (parted[:, :half].max(axis=1).astype(np.float64) + upper) / 2  # type: ignore[no-any-return]


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a ⊗ b of w-first quaternions, broadcasting over leading axes ((..., 4))."""
    a, b = np.asarray(a), np.asarray(b)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """A proper rotation matrix (3, 3) -> unit quaternion (4,) w first, w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    out = np.array(q)
    out /= np.linalg.norm(out)
    return out if out[0] >= 0 else -out


def similarity_parts(matrix: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Split an affine (4, 4) into rotation R (3, 3), uniform scale s and translation t.

    Raises:
        TransformError: non-uniform scale, shear or a mirror, which 3D Gaussians with a scale per
            axis cannot take exactly. The message says how to fix the object.
    """
    m = np.asarray(matrix, dtype=np.float64)
    A = m[:3, :3]
    det = float(np.linalg.det(A))
    if det <= 0:
        raise TransformError(
            "the object is mirrored (negative scale) or flat; mirrored Gaussians cannot be exported. "
            "Make all scale values positive (Object > Apply > Scale is not enough: clear the negative scale)"
        )
    singular = np.linalg.svd(A, compute_uv=False)
    if singular.max() / singular.min() - 1.0 > UNIFORM_SCALE_TOLERANCE:
        raise TransformError(
            f"the object has a non-uniform scale (axis factors {', '.join(f'{v:.4g}' for v in singular)}); "
            "Gaussians can only take a uniform scale exactly. Set X, Y and Z scale to the same value and export again"
        )
    s = det ** (1.0 / 3.0)
    return A / s, s, m[:3, 3].copy()


def bake_transform(
    matrix: np.ndarray, means: np.ndarray, quats_wxyz: np.ndarray, log_scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply a similarity transform to Gaussians: ``p' = sRp + t``, ``q' = q_R ⊗ q``, ``log σ' = log σ + ln s``.

    The SH bands (``f_rest_*``) turn with R too: see :func:`.sh_rotation.rotate_f_rest`.

    Args:
        matrix: (4, 4) object-to-target transform (rotation, uniform scale, translation).
        means: (N, 3) positions; quats_wxyz: (N, 4); log_scales: (N, 3) natural-log scales.

    Returns:
        (means', quats', log_scales') as float32 arrays of the same shapes.
    """
    R, s, t = similarity_parts(matrix)
    means_out = (np.asarray(means, dtype=np.float64) @ (s * R).T + t).astype(np.float32)
    quats_out = quaternion_multiply(matrix_to_quaternion(R), np.asarray(quats_wxyz, np.float64)).astype(np.float32)
    scales_out = (np.asarray(log_scales, dtype=np.float64) + math.log(s)).astype(np.float32)
    return means_out, quats_out, scales_out
