"""Render helpers for display-fidelity tests and benchmarks: engines, novel views, reference images, PSNR.

Reference images come from the sidecar's rasteriser (tests/reference_render.py) run under
``sidecar_python`` as a subprocess, so this works in a bpy environment without torch.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
from mathutils import Matrix

REPO = Path(__file__).resolve().parents[2]
VIEWS = ("source", "aside_10cm", "orbit_5deg")


def eevee_engine() -> str:
    """EEVEE's identifier: BLENDER_EEVEE (5.0+) or BLENDER_EEVEE_NEXT (4.2-4.4)."""
    items = bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items.keys()
    return "BLENDER_EEVEE" if "BLENDER_EEVEE" in items else "BLENDER_EEVEE_NEXT"


def configure(scene: bpy.types.Scene, engine: str, samples: int = 16) -> None:
    """``engine`` (CYCLES or EEVEE) with Blender's default pixel filter, the Standard view, 8-bit PNG output."""
    if engine == "EEVEE":
        scene.render.engine = eevee_engine()
        scene.eevee.taa_render_samples = samples
    else:
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = samples
        scene.cycles.use_denoising = False
        scene.cycles.use_adaptive_sampling = False
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.dither_intensity = 0.0
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.render.image_settings.color_depth = "8"


def render(scene: bpy.types.Scene, path: Path) -> np.ndarray:
    """Render the scene's camera to ``path``; the (H, W, 3) uint8 image."""
    from PIL import Image

    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def view_matrix(source: Matrix, view: str, pivot_depth: float) -> Matrix:
    """The source camera's world matrix moved to ``view``: 10 cm to its right, or orbited 5° (to the
    right, about its own up axis) around the point ``pivot_depth`` metres ahead of it."""
    if view == "source":
        return source.copy()
    if view == "aside_10cm":
        return Matrix.Translation(source.col[0].xyz * 0.1) @ source
    if view == "orbit_5deg":
        pivot = source.translation - source.col[2].xyz * pivot_depth
        turn = Matrix.Rotation(math.radians(5.0), 4, source.col[1].xyz)
        return Matrix.Translation(pivot) @ turn @ Matrix.Translation(-pivot) @ source
    raise ValueError(f"unknown view {view!r}; use one of {VIEWS}")


def reference_images(
    sharp: ModuleType,
    sidecar_python: str,
    ply_path: Path,
    splat: bpy.types.Object,
    cam: bpy.types.Object,
    worlds: list[Matrix],
    scratch: Path,
) -> np.ndarray:
    """(T, H, W, 3) uint8: the sidecar rasteriser's view of the PLY through ``cam`` at each world matrix."""
    scene = bpy.context.scene
    saved = cam.matrix_world.copy()
    views, Ks = [], []
    try:
        for world in worlds:
            cam.matrix_world = world
            bpy.context.view_layer.update()
            v, k = sharp.preview.frame_cameras(
                bpy.context, splat, cam, range(scene.frame_current, scene.frame_current + 1)
            )
            views.append(v[0])
            Ks.append(k[0])
    finally:
        cam.matrix_world = saved
        bpy.context.view_layer.update()
    cameras, out = scratch / "cameras.npz", scratch / "reference.npz"
    size = (scene.render.resolution_x, scene.render.resolution_y)
    np.savez(cameras, viewmats=np.stack(views), Ks=np.stack(Ks), size=np.array(size))
    subprocess.run(
        [sidecar_python, str(REPO / "tests" / "reference_render.py"), str(ply_path), str(cameras), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return np.load(out)["rgb"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)
