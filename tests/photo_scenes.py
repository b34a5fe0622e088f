"""Gaussian test scenes built from a real photo (numpy only): what the display must reproduce.

* ``compact``: one small, nearly opaque, round splat per pixel on the pixel's ray, on a smooth depth
  field (nearer splats hide farther ones where the field folds);
* ``soft``: SHARP-like output, two layers per pixel: a translucent, anisotropic, randomly rotated front
  layer and a wider, nearly opaque back layer 15 cm behind it with a blurred copy of the colours.

Colours are stored as SHARP stores them: f_dc of sRGB values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sharp_blender.io import conventions, ply

SCENES = ("compact", "soft")


def load_photo(path: Path, width: int) -> np.ndarray:
    """The photo downscaled (Lanczos) to ``width`` pixels wide, an even height, (H, W, 3) uint8."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
        height = max(2, round(rgb.height * width / rgb.width / 2) * 2)
        return np.asarray(rgb.resize((width, height), Image.Resampling.LANCZOS))


def depth_field(height: int, width: int) -> np.ndarray:
    """A smooth depth map, 2.2-3.6 m: a tilted floor with a bump, folded enough for some occlusion."""
    v, u = np.mgrid[0:height, 0:width] / np.float64(max(width, height))
    return 2.6 + 0.6 * v - 0.4 * np.exp(-((u - 0.45) ** 2 + (v - 0.3) ** 2) / 0.02) + 0.15 * np.sin(9 * u)


def _random_quaternions(rng: np.random.Generator, n: int) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _layer(
    image: np.ndarray,
    z: np.ndarray,
    focal: float,
    sigma_px: np.ndarray,
    opacity: np.ndarray,
    quats: np.ndarray,
) -> dict[str, np.ndarray]:
    height, width = image.shape[:2]
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    f_dc = conventions.rgb_to_sh_dc(image.reshape(-1, 3).astype(np.float64) / 255.0)
    log_scale = np.log(sigma_px * (z.reshape(-1, 1) / focal))
    columns = {
        "x": ((u + 0.5 - width / 2) * z / focal).ravel(),
        "y": ((v + 0.5 - height / 2) * z / focal).ravel(),
        "z": z.ravel(),
        "opacity": conventions.logit(np.clip(opacity, 1e-4, 1 - 1e-4)),
    }
    columns.update({f"f_dc_{i}": f_dc[:, i] for i in range(3)})
    columns.update({f"scale_{i}": log_scale[:, i] for i in range(3)})
    columns.update({f"rot_{i}": quats[:, i] for i in range(4)})
    return columns


def make_scene(kind: str, image: np.ndarray, focal: float, seed: int = 0) -> np.ndarray:
    """The vertex array of scene ``kind`` (one of SCENES) seen from the camera K = [[f, 0, W/2], [0, f, H/2]]."""
    height, width = image.shape[:2]
    n = height * width
    rng = np.random.default_rng(seed)
    z = depth_field(height, width)
    identity = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    if kind == "compact":
        layers = [_layer(image, z, focal, np.full((n, 3), 0.5), np.full(n, 0.98), identity)]
    elif kind == "soft":
        front_sigma = np.stack([rng.uniform(0.9, 1.4, n), rng.uniform(0.5, 0.9, n), np.full(n, 0.3)], axis=1)
        front = _layer(image, z, focal, front_sigma, rng.uniform(0.35, 0.75, n), _random_quaternions(rng, n))
        blurred = image.astype(np.float64)
        for axis in (0, 1):
            blurred = (np.roll(blurred, 1, axis) + blurred + np.roll(blurred, -1, axis)) / 3
        back = _layer(blurred.astype(np.uint8), z + 0.15, focal, np.full((n, 3), 1.6), np.full(n, 0.92), identity)
        layers = [front, back]
    else:
        raise ValueError(f"unknown scene {kind!r}; use one of {SCENES}")
    columns = {name: np.concatenate([layer[name] for layer in layers]) for name in ply.SHARP_VERTEX_PROPERTIES}
    return ply.structured({k: np.asarray(c, dtype=np.float32) for k, c in columns.items()})


def write_scene(path: Path, kind: str, image: np.ndarray, focal: float, seed: int = 0) -> Path:
    vertex = make_scene(kind, image, focal, seed)
    height, width = image.shape[:2]
    ply.write_ply(path, vertex, ply.sharp_metadata(focal, (width, height), len(vertex), [1 / 3.6, 1 / 2.2]))
    return path
