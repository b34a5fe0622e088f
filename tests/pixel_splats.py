"""Test scenes that reproduce an image: one small opaque splat per pixel on the pixel's ray (numpy only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sharp_blender.io import conventions, ply


def write_pixel_ply(
    path: Path,
    image: np.ndarray,
    focal: float,
    depth_range: tuple[float, float] = (2.0, 6.0),
    opacity: float = 0.999,
    seed: int = 0,
) -> np.ndarray:
    """Write a SHARP-layout PLY whose camera K = [[f, 0, W/2], [0, f, H/2]] sees ``image`` (H, W, 3 uint8).

    Each pixel gets an isotropic Gaussian at a random depth on the ray through its centre (u + 0.5, v + 0.5),
    a quarter pixel wide so neighbours stay below alpha 1/255. Returns the (H, W) depths.
    """
    height, width = image.shape[:2]
    z = np.random.default_rng(seed).uniform(*depth_range, (height, width)).astype(np.float32)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    log_scale = np.log(0.25 * z / focal).ravel()
    f_dc = conventions.rgb_to_sh_dc(image.reshape(-1, 3).astype(np.float32) / 255.0)
    n = height * width
    columns = {
        "x": ((u + 0.5 - width / 2) * z / focal).ravel(),
        "y": ((v + 0.5 - height / 2) * z / focal).ravel(),
        "z": z.ravel(),
        "f_dc_0": f_dc[:, 0],
        "f_dc_1": f_dc[:, 1],
        "f_dc_2": f_dc[:, 2],
        "opacity": np.full(n, conventions.logit(np.float32(opacity))),
        "scale_0": log_scale,
        "scale_1": log_scale,
        "scale_2": log_scale,
        "rot_0": np.ones(n),
        "rot_1": np.zeros(n),
        "rot_2": np.zeros(n),
        "rot_3": np.zeros(n),
    }
    vertex = ply.structured({k: np.asarray(c, dtype=np.float32) for k, c in columns.items()})
    ply.write_ply(path, vertex, ply.sharp_metadata(focal, (width, height), n, [0.1, 0.5]))
    return z
