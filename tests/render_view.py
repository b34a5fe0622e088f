"""Render one view of a splat PLY in a fresh bpy process, as the add-on imports it and sets it up.

Usage: python tests/render_view.py SCENE.ply ENGINE MATRIX.npy OUT.png

EEVEE (Mesa software GL) renders the first frame of a process in a quarter of the CPU time of any
later one (measured with bpy 5.3.0: 7 s vs 27 s at 8 samples), so the fidelity tests draw each EEVEE
view in its own process. MATRIX.npy is the camera's matrix_world (4, 4).

Beyond the add-on's render set-up, EEVEE's shadows are turned off: these scenes have no lights, so
shadows draw nothing (the images are identical to the pixel, measured with bpy 5.3.0), but the shadow
pipeline still runs every sample and costs a quarter of the render's CPU time (compact scene, 128
samples: 18.8 against 25.8 CPU seconds). The set-up itself leaves shadows on, for the lights of users' scenes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(ply_path: str, engine: str, matrix_path: str, out_path: str) -> int:
    import bpy

    from sharp_blender import importer, render_setup

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    result = importer.import_ply(bpy.context, ply_path)
    assert result.camera is not None and result.splat.type == "POINTCLOUD"
    render_setup.apply(scene)
    scene.render.engine = engine
    assert not any(o.type == "LIGHT" for o in scene.objects), "shadows would matter: keep them on"
    scene.eevee.use_shadows = False
    result.camera.matrix_world = importer.to_matrix(np.load(matrix_path))
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_depth = "8"
    scene.render.filepath = out_path
    bpy.ops.render.render(write_still=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:5]))
