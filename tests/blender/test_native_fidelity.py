"""Native Gaussian splats look like SHARP's own renderer (Blender >= 5.3; does not apply before).

Soft and compact scenes made from a real photo (tests/gaussian_scenes.py) are written as SHARP PLYs,
imported through the add-on, given the add-on's render set-up, and rendered in Cycles and EEVEE through
the created camera, 10 cm to its right, and orbited 5° about the scene centre. The reference is the
sidecar's Gaussian rasteriser from the same cameras, run as a subprocess in the torch environment
(the ``sidecar_python`` fixture: ``SHARP_SIDECAR_PYTHON``, which scripts/test.sh sets to the 3.11
environment's interpreter); this environment needs no torch. Each EEVEE view renders in a fresh process
(tests/render_view.py), with shadows off: these scenes have no lights, and the images are the same.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from PIL import Image

from sharp_blender import native_cloud
from tests import gaussian_scenes

REPO = Path(__file__).resolve().parents[2]
NATIVE = native_cloud.supported()  # the add-on's own feature test (PointCloud.type offers GAUSSIAN_SPLAT)
pytestmark = pytest.mark.skipif(not NATIVE, reason="this Blender has no native Gaussian splats (5.3+)")

CAMERA = gaussian_scenes.SceneCamera(width=120, height=80, focal=144.0)
ASIDE_M = 0.10
ORBIT_DEG = 5.0
# Issue 11's targets, asserted as they are. Soft splats in EEVEE have the least margin (36.4-37.1 dB at
# the set-up's 512 samples): EEVEE's Gaussian is 1.06x as wide as the splat's, which makes layered soft
# splats 2-3 levels too bright (see sharp_blender/render_setup.py); the rest is sampling noise.
TARGETS_DB = {
    ("compact", "CYCLES"): 40.0,
    ("compact", "BLENDER_EEVEE"): 36.0,
    ("soft", "CYCLES"): 35.0,
    ("soft", "BLENDER_EEVEE"): 36.0,
}
_REFERENCES: dict[str, np.ndarray] = {}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def views(sharp: ModuleType, cam_world: np.ndarray, centre: np.ndarray) -> dict[str, np.ndarray]:
    """Camera matrices: the source, 10 cm to its right, and a 5° orbit about the vertical through the centre."""
    placement = sharp.placement
    angle = math.radians(ORBIT_DEG)
    turn = np.eye(4)
    turn[:2, :2] = [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    orbit = placement.translation(centre) @ turn @ placement.translation(-centre) @ cam_world
    return {"source": cam_world, "aside": cam_world @ placement.translation([ASIDE_M, 0, 0]), "orbit": orbit}


def rasterise_reference(python: str, ply_path: Path, viewmats: np.ndarray, K: np.ndarray, out_dir: Path) -> np.ndarray:
    """(C, H, W, 3) sRGB in [0, 255] (float) from the sidecar's rasteriser."""
    cameras = out_dir / f"{ply_path.stem}-cameras.npz"
    out = out_dir / f"{ply_path.stem}-reference.npz"
    np.savez(cameras, viewmats=viewmats, Ks=np.repeat(K[None], len(viewmats), 0), size=[CAMERA.width, CAMERA.height])
    subprocess.run(
        [python, str(REPO / "tests" / "reference_render.py"), str(ply_path), str(cameras), str(out)], check=True
    )
    return np.load(out)["rgb"].astype(np.float64)


def render(scene: bpy.types.Scene, path: Path) -> np.ndarray:
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_depth = "8"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def render_in_process(ply_path: Path, engine: str, matrix: np.ndarray, out: Path) -> np.ndarray:
    np.save(out.with_suffix(".npy"), matrix)
    script = REPO / "tests" / "render_view.py"
    subprocess.run(
        [sys.executable, str(script), str(ply_path), engine, str(out.with_suffix(".npy")), str(out)], check=True
    )
    with Image.open(out) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


@pytest.mark.parametrize(
    "engine", ["CYCLES", pytest.param("BLENDER_EEVEE", marks=pytest.mark.slow)], ids=["cycles", "eevee"]
)
@pytest.mark.parametrize("kind", ["compact", "soft"])
def test_native_render_matches_the_reference_rasteriser(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    tmp_path_factory: pytest.TempPathFactory,
    reference_images: dict[str, Path],
    record_property: Callable[[str, object], None],
    sidecar_python: str,
    kind: str,
    engine: str,
) -> None:
    out_dir = tmp_path_factory.mktemp(f"{kind}-{engine.lower()}")
    path = gaussian_scenes.write_scene(out_dir / f"{kind}.ply", kind, reference_images["photo_exif"], CAMERA)
    assert bpy.ops.sharp.import_ply(filepath=str(path)) == {"FINISHED"}
    scene = clean_scene
    obj = bpy.context.active_object
    assert obj.type == "POINTCLOUD" and obj.data.type == "GAUSSIAN_SPLAT"
    cam = scene.camera
    assert cam is not None and (scene.render.resolution_x, scene.render.resolution_y) == (CAMERA.width, CAMERA.height)
    assert bpy.ops.sharp.render_setup() == {"FINISHED"}
    scene.render.engine = engine
    if engine == "CYCLES":
        scene.cycles.device = "CPU"

    importer, placement = sharp.importer, sharp.placement
    obj_world = importer.from_matrix(obj.matrix_world)
    origin = np.asarray(obj.data[importer.PROP_ORIGIN], dtype=np.float64)
    cameras = views(sharp, importer.from_matrix(cam.matrix_world), obj_world[:3, 3])
    K = sharp.camera.intrinsics(cam, scene)
    # The rasteriser draws the PLY's own numbers: PLY frame -> object local -> world -> OpenCV camera.
    viewmats = np.stack(
        [placement.view_matrix(m, obj_world) @ placement.translation(-origin) for m in cameras.values()]
    )
    if kind not in _REFERENCES:
        _REFERENCES[kind] = rasterise_reference(sidecar_python, path, viewmats, K, out_dir)
    expected = _REFERENCES[kind]

    scores = {}
    for i, (name, matrix) in enumerate(cameras.items()):
        if engine == "CYCLES":
            cam.matrix_world = importer.to_matrix(matrix)
            image = render(scene, out_dir / f"{name}.png")
        else:  # a fresh process per EEVEE frame: see tests/render_view.py
            image = render_in_process(path, engine, matrix, out_dir / f"{name}.png")
        scores[name] = psnr(image, expected[i])
        record_property(f"psnr_{name}_db", round(scores[name], 2))
    print(f"{kind} {engine}: " + ", ".join(f"{k} {v:.2f} dB" for k, v in scores.items()))
    results = os.environ.get("SHARP_FIDELITY_JSON")
    if results:  # for the closing note's table
        with open(results, "a") as fh:
            fh.write(json.dumps({"scene": kind, "engine": engine, **scores}) + "\n")
    threshold = TARGETS_DB[(kind, engine)]
    assert min(scores.values()) >= threshold, f"{kind} in {engine}: {scores} (need >= {threshold} dB)"
