#!/usr/bin/env python3
"""One view of a soft test scene rendered three ways, side by side: the sidecar's reference rasteriser,
native Gaussians in EEVEE (Blender >= 5.3) and the Points display in EEVEE.

Run with bpy 5.3.0 (Python 3.13); the reference runs in the torch environment as a subprocess:

    SHARP_SIDECAR_PYTHON=.venv-test/bin/python /path/to/python3.13 scripts/render_comparison.py docs/x.png
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scene", default="soft", choices=("soft", "compact"))
    parser.add_argument("--zoom", type=int, default=2)
    args = parser.parse_args()

    import bpy
    from PIL import Image

    from sharp_blender import camera, importer, native_cloud, placement, render_setup
    from tests import gaussian_scenes

    photo = Path(os.environ.get("SHARP_SHARED", ROOT.parent / "shared")) / "reference" / "images" / "photo_exif.jpg"
    cam = gaussian_scenes.SceneCamera(120, 80, 144.0)
    python = os.environ.get("SHARP_SIDECAR_PYTHON", str(ROOT / ".venv-test" / "bin" / "python"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        path = gaussian_scenes.write_scene(tmp_dir / f"{args.scene}.ply", args.scene, photo, cam)
        bpy.ops.wm.read_homefile(use_empty=True)
        scene = bpy.context.scene
        result = importer.import_ply(bpy.context, path)
        render_setup.apply(scene)
        scene.render.engine = "BLENDER_EEVEE"
        obj, cam_obj = result.splat, result.camera
        origin = np.asarray(obj.data[importer.PROP_ORIGIN], dtype=np.float64)
        viewmat = placement.view_matrix(
            importer.from_matrix(cam_obj.matrix_world), importer.from_matrix(obj.matrix_world)
        )
        K = camera.intrinsics(cam_obj, scene)
        np.savez(
            tmp_dir / "cams.npz",
            viewmats=[viewmat @ placement.translation(-origin)],
            Ks=[K],
            size=[cam.width, cam.height],
        )
        ref_script = str(ROOT / "tests" / "reference_render.py")
        subprocess.run([python, ref_script, str(path), str(tmp_dir / "cams.npz"), str(tmp_dir / "ref.npz")], check=True)
        panels = [np.load(tmp_dir / "ref.npz")["rgb"][0].astype(np.float64)]
        for mode in (native_cloud.DISPLAY_GAUSSIANS, native_cloud.DISPLAY_POINTS):
            native_cloud.set_display(bpy.context, obj, mode, importer.stored_color_space(obj.data))
            scene.render.filepath = str(tmp_dir / f"{mode}.png")
            bpy.ops.render.render(write_still=True)
            with Image.open(scene.render.filepath) as image:
                panels.append(np.asarray(image.convert("RGB"), dtype=np.float64))
    for label, panel in zip(("native Gaussians", "points"), panels[1:], strict=True):
        mse = float(np.mean((panel - panels[0]) ** 2))
        print(f"{label} vs reference: {10 * math.log10(255**2 / mse):.2f} dB")
    gap = np.full((cam.height, 2, 3), 255.0)
    row = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    picture = Image.fromarray(np.clip(row + 0.5, 0, 255).astype(np.uint8))
    picture = picture.resize((picture.width * args.zoom, picture.height * args.zoom), Image.Resampling.NEAREST)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB): reference | native EEVEE | points (EEVEE)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
