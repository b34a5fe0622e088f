"""Reference images from the sidecar's own Gaussian rasteriser, for fidelity tests of Blender renders.

Runs as a subprocess under a Python with torch and the sidecar (the 3.11 test environment; the 5.3 one
has no torch): ``python tests/reference_render.py SCENE.ply CAMERAS.npz OUT.npz``. CAMERAS holds
``viewmats`` (T, 4, 4; object -> OpenCV camera), ``Ks`` (T, 3, 3) and ``size`` (W, H); OUT gets ``rgb``
(T, H, W, 3) sRGB uint8, rendered by the torch rasteriser (gsplat's classic rules) on the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    from sharp_sidecar.render import render, render_scene

    scene_path, cameras_path, out_path = (Path(a) for a in argv)
    cameras = np.load(cameras_path)
    width, height = (int(v) for v in cameras["size"])
    scene = render_scene.scene_from_ply(scene_path, device="cpu")
    rgb, _ = render.render_images(
        render.make_rasterizer(scene, "torch"), cameras["viewmats"], cameras["Ks"], width, height
    )
    partial = out_path.with_suffix(".partial.npz")
    np.savez(partial, rgb=rgb)
    partial.replace(out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
