"""Render a PLY with the sidecar's Gaussian rasteriser (torch) from given cameras; run with the torch env.

Usage: python tests/reference_render.py SCENE.ply CAMERAS.npz OUT.npz

CAMERAS.npz holds ``viewmats`` (C, 4, 4; PLY frame -> OpenCV camera), ``Ks`` (C, 3, 3) and ``size``
(W, H). OUT.npz gets ``images`` (C, H, W, 3): sRGB in [0, 1] as float (no 8-bit rounding).

The options are the add-on's definition of the picture, which is SHARP's reference: colours decoded
sRGB -> linear per splat, blended in linear light over black, encoded linear -> sRGB; no 2-D
dilation (``eps2d`` 0, as SHARP's renderer; gsplat's default 0.3 would blur every splat).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from sharp_sidecar import conventions, rasterize_torch, render_scene


def main(scene_path: str, cameras_path: str, out_path: str) -> int:
    scene = render_scene.scene_from_ply(scene_path)
    cameras = np.load(cameras_path)
    width, height = (int(v) for v in cameras["size"])
    viewmats = torch.from_numpy(cameras["viewmats"].astype(np.float32))
    Ks = torch.from_numpy(cameras["Ks"].astype(np.float32))
    with torch.no_grad():
        linear, _ = rasterize_torch.rasterize(
            scene.means, scene.quats, scene.scales, scene.opacities, scene.colors, viewmats, Ks, width, height,
            eps2d=0.0, render_depth=False,
        )  # fmt: skip
    srgb = conventions.linear_to_srgb(linear.clamp(0.0, 1.0)).numpy()
    np.savez(out_path, images=srgb.astype(np.float32))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))
