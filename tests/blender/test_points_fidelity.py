"""Points display: the same disc in Cycles and EEVEE, and both close to the sidecar's rasteriser.

The disc test renders one splat large and counts its pixels: a disc of radius Point Size × max(scale)
in both engines (EEVEE's own point is a diamond of 64 % of that area), also on a scaled object. The
photo test renders the compact photo scene (tests/photo_scenes.py) at the add-on's defaults with both
engines and compares them with the rasteriser's image (tests/reference_render.py, via the sidecar's
Python) and with each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest

from sharp_blender.io import ply
from tests import photo_scenes
from tests.blender import render_views

DISC_PX = 9.0  # the shown disc's radius in pixels
SIZE = 48


def _one_splat(path: Path, focal: float, depth: float, sigma_px: float) -> Path:
    cols = {name: np.zeros(1, np.float32) for name in ply.SHARP_VERTEX_PROPERTIES}
    log_sigma = math.log(sigma_px * depth / focal)
    cols.update(z=np.full(1, depth), opacity=np.full(1, 9.0), rot_0=np.ones(1))
    cols.update(f_dc_0=np.full(1, 1.5), f_dc_1=np.full(1, 1.5), f_dc_2=np.full(1, 1.5))
    cols.update({f"scale_{i}": np.full(1, log_sigma) for i in range(3)})
    vertex = ply.structured({k: np.asarray(v, np.float32) for k, v in cols.items()})
    ply.write_ply(path, vertex, ply.sharp_metadata(focal, (SIZE, SIZE), 1, [0.4, 0.6]))
    return path


@pytest.mark.parametrize(
    "engine, object_scale",
    [("CYCLES", 1.0), ("CYCLES", 0.5), pytest.param("EEVEE", 1.0, marks=pytest.mark.slow)],
)
def test_a_splat_shows_as_a_disc_of_point_size_times_its_scale(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path, engine: str, object_scale: float
) -> None:
    focal, depth = 40.0, 2.0
    size = sharp.display.DEFAULT_POINT_SIZE
    bpy.ops.sharp.import_ply(
        filepath=str(_one_splat(tmp_path / "one.ply", focal, depth, DISC_PX / size)), display="POINTS"
    )
    obj, cam = bpy.data.objects["one"], bpy.data.objects["one Camera"]
    # Scaling the splats about the camera keeps their projection but halves the world radius.
    cam_world = cam.matrix_world.copy()
    obj.matrix_world = cam_world @ bpy_scale(object_scale) @ cam_world.inverted() @ obj.matrix_world
    clean_scene.camera = cam
    render_views.configure(clean_scene, engine, samples=4)
    clean_scene.render.filter_size = 0.01 if engine == "CYCLES" else 0.0
    image = render_views.render(clean_scene, tmp_path / "one.png")
    lit = image.mean(axis=2) > 127
    expected = math.pi * (DISC_PX * 1.0) ** 2  # projected radius stays DISC_PX
    assert lit.sum() == pytest.approx(expected, rel=0.08), (lit.sum(), expected)
    # Round, not a diamond: the lit pixels' extent along the axes matches the area's radius.
    rows = np.flatnonzero(lit.any(axis=1))
    assert (rows[-1] - rows[0] + 1) / 2 == pytest.approx(DISC_PX, abs=1.0)


def bpy_scale(factor: float):  # type: ignore[no-untyped-def]
    from mathutils import Matrix

    return Matrix.Diagonal((factor, factor, factor, 1.0))


@pytest.mark.slow
def test_cycles_and_eevee_agree_with_the_rasteriser_on_a_compact_photo_scene(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    tmp_path: Path,
    reference_images: dict[str, Path],
    sidecar_python: str,
    record_property: Callable[[str, object], None],
) -> None:
    photo = photo_scenes.load_photo(reference_images["photo_exif"], 96)
    path = photo_scenes.write_scene(tmp_path / "compact.ply", "compact", photo, focal=1.1 * 96)
    assert bpy.ops.sharp.import_ply(filepath=str(path), display="POINTS") == {"FINISHED"}
    splat, cam = bpy.data.objects["compact"], bpy.data.objects["compact Camera"]
    clean_scene.camera = cam
    reference = render_views.reference_images(sharp, sidecar_python, path, splat, cam, [cam.matrix_world], tmp_path)[0]
    scores = {}
    for engine in ("CYCLES", "EEVEE"):
        render_views.configure(clean_scene, engine, samples=16)
        image = render_views.render(clean_scene, tmp_path / f"{engine}.png")
        scores[engine] = render_views.psnr(image, reference)
        record_property(f"psnr_{engine.lower()}_db", round(scores[engine], 2))
    print(f"PSNR vs the rasteriser at Point Size {sharp.display.DEFAULT_POINT_SIZE}: {scores}")
    assert abs(scores["CYCLES"] - scores["EEVEE"]) <= 3.0
    assert min(scores.values()) >= 30.0
