#!/usr/bin/env python3
"""Points display (Mesh to Points + emission) against the sidecar's rasteriser: PSNR per engine, scene, view.

Runs under a bpy environment (Blender as a module), installs the add-on from the built zip, builds the
tests' photo scenes (tests/photo_scenes.py), imports them with the add-on and renders them with Cycles
and EEVEE from the source camera, 10 cm aside and a 5° orbit. References come from
tests/reference_render.py under SHARP_SIDECAR_PYTHON (default: this Python). Tiny renders (e.g. 128 px).

Usage: python scripts/bench_points_display.py [--width 128] [--sizes 1.0,1.5,2.0] [--views source,...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="sharp-bench-user-")

import bpy  # noqa: E402

from tests import photo_scenes  # noqa: E402
from tests.blender import render_views  # noqa: E402

EXTENSION_MODULE = "bl_ext.user_default.sharp_blender"


def install_addon(scratch: Path):  # type: ignore[no-untyped-def]
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_extension.py"), "--out-dir", str(scratch)],
        check=True,
        capture_output=True,
        text=True,
    )
    zip_path = run.stdout.strip().splitlines()[-1]
    assert bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    sharp = importlib.import_module(EXTENSION_MODULE)
    for name in ("display", "preview"):
        importlib.import_module(f"{EXTENSION_MODULE}.{name}")
    return sharp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--sizes", default="")
    parser.add_argument("--views", default=",".join(render_views.VIEWS))
    parser.add_argument("--scenes", default=",".join(photo_scenes.SCENES))
    parser.add_argument("--engines", default="CYCLES,EEVEE")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--photo", type=Path, default=None)
    args = parser.parse_args()
    shared = Path(os.environ.get("SHARP_SHARED") or ROOT.parent / "shared")
    photo_path = args.photo or shared / "reference" / "images" / "photo_exif.jpg"
    sidecar_python = os.environ.get("SHARP_SIDECAR_PYTHON") or sys.executable
    scratch = Path(tempfile.mkdtemp(prefix="sharp-bench-"))
    sharp = install_addon(scratch)
    photo = photo_scenes.load_photo(photo_path, args.width)
    focal = 1.1 * args.width
    results = []
    for kind in args.scenes.split(","):
        bpy.ops.wm.read_homefile(use_empty=True)
        ply_path = photo_scenes.write_scene(scratch / f"{kind}.ply", kind, photo, focal)
        assert bpy.ops.sharp.import_ply(filepath=str(ply_path), display="POINTS") == {"FINISHED"}
        splat, cam = bpy.data.objects[kind], bpy.data.objects[f"{kind} Camera"]
        scene = bpy.context.scene
        scene.camera = cam
        source = cam.matrix_world.copy()
        views = args.views.split(",")
        worlds = [render_views.view_matrix(source, v, pivot_depth=2.8) for v in views]
        reference = render_views.reference_images(sharp, sidecar_python, ply_path, splat, cam, worlds, scratch)
        sizes = [float(s) for s in args.sizes.split(",")] if args.sizes else [sharp.display.DEFAULT_POINT_SIZE]
        for engine in args.engines.split(","):
            render_views.configure(scene, engine, args.samples)
            for size in sizes:
                sharp.display.set_input(splat, sharp.display.POINT_SIZE, size)
                for view, world, ref in zip(views, worlds, reference, strict=True):
                    cam.matrix_world = world
                    start = time.perf_counter()
                    image = render_views.render(scene, scratch / f"{kind}-{engine}-{size}-{view}.png")
                    seconds = time.perf_counter() - start
                    row = {
                        "scene": kind,
                        "engine": engine,
                        "point_size": size,
                        "view": view,
                        "psnr_db": round(render_views.psnr(image, ref), 2),
                        "mean_diff": round(float(image.mean() - ref.mean()), 2),
                        "render_s": round(seconds, 1),
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
                cam.matrix_world = source
    print(f"images in {scratch}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
