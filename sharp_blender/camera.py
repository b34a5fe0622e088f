"""The Blender camera that sees a splat scene as its photo was taken, and K read back from a camera.

The formulas are in :mod:`.placement` (pure); this module applies them to bpy data.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from . import placement

logger = logging.getLogger(__name__)

CLIP_START_M = 0.01
CLIP_END_M = 1000.0
BACKGROUND_ALPHA = 0.75


def create_camera(
    context: bpy.types.Context,
    name: str,
    K: np.ndarray,
    image_size: tuple[int, int],
    matrix_world: Matrix,
    photo: str | os.PathLike[str] | None = None,
) -> bpy.types.Object:
    """A camera object (not yet linked to a collection) for intrinsics K (3, 3) on a W x H image."""
    settings = placement.camera_settings(K, image_size)
    data = bpy.data.cameras.new(name)
    try:
        data.type = "PERSP"
        data.sensor_fit = settings.sensor_fit
        data.sensor_width = settings.sensor_width
        data.lens = settings.lens
        data.shift_x = settings.shift_x
        data.shift_y = settings.shift_y
        data.clip_start = CLIP_START_M
        data.clip_end = CLIP_END_M
        if photo is not None:
            add_background(data, photo)
        obj = bpy.data.objects.new(name, data)
    except BaseException:
        bpy.data.cameras.remove(data)
        raise
    obj.matrix_world = matrix_world
    return obj


def add_background(data: bpy.types.Camera, photo: str | os.PathLike[str]) -> None:
    """Show the source photo behind the splats when looking through the camera (to check alignment)."""
    path = Path(photo)
    try:
        image = bpy.data.images.load(str(path), check_existing=True)
    except RuntimeError as exc:  # an unreadable photo only loses the background
        logger.warning("cannot show %s as the camera background: %s", path, exc)
        return
    background = data.background_images.new()
    background.image = image
    background.alpha = BACKGROUND_ALPHA
    data.show_background_images = True


def apply_render_settings(scene: bpy.types.Scene, K: np.ndarray, image_size: tuple[int, int]) -> None:
    """Scene resolution and pixel aspect that the camera's lens and shift assume."""
    settings = placement.camera_settings(K, image_size)
    render = scene.render
    render.resolution_x = settings.resolution_x
    render.resolution_y = settings.resolution_y
    render.resolution_percentage = 100
    render.pixel_aspect_x = settings.pixel_aspect_x
    render.pixel_aspect_y = settings.pixel_aspect_y


def render_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """The rendered image size in pixels (resolution times percentage)."""
    render = scene.render
    scale = render.resolution_percentage / 100.0
    return int(render.resolution_x * scale), int(render.resolution_y * scale)


def intrinsics(camera_obj: bpy.types.Object, scene: bpy.types.Scene, size: tuple[int, int] | None = None) -> np.ndarray:
    """K (3, 3) in pixels of a perspective camera for the scene's render size (or ``size``).

    Raises:
        ValueError: the camera is not perspective (orthographic and panoramic cameras have no K).
    """
    data = camera_obj.data
    if not isinstance(data, bpy.types.Camera) or data.type != "PERSP":
        raise ValueError(f"{camera_obj.name} is not a perspective camera; choose a perspective camera")
    size = size or render_size(scene)
    render = scene.render
    return placement.intrinsics(
        data.lens,
        data.sensor_width,
        data.sensor_height,
        data.sensor_fit,
        data.shift_x,
        data.shift_y,
        size,
        (render.pixel_aspect_x, render.pixel_aspect_y),
    )
