"""Soft, layered Gaussian test scenes made from a real photo, written as SHARP-layout PLYs (numpy only).

* ``compact``: small, nearly opaque, flat splats on a regular grid, one per pixel of the render as
  SHARP makes one per cell of its grid (σ 0.45-0.75 px, 0.15 of that thick), facing the camera within
  5° as SHARP's do (its rotations are small deltas from the identity), on a smooth depth surface
  2-4 m away. Cycles orders splats by where each ray meets them, the rasteriser by centre depth; with
  tilts of up to 35° the two orders disagree wherever tilted neighbours overlap (the same scene at one
  splat per 3 px: 35.4 dB converged, 44 dB with the splats facing the camera).
* ``soft``: SHARP-like output: a back layer of larger, translucent, flattened ("pancake") splats at
  3-4.5 m, and a sparse front layer of fainter ones at 1.8-2.6 m, both coloured from the photo.

Both renderers under test see the same file, so the scenes need not reproduce the photo; they must
be textured, overlap and blend (not flat colour fields), to exercise projection, kernel and compositing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sharp_blender.io import conventions, ply


@dataclass(frozen=True)
class SceneCamera:
    width: int
    height: int
    focal: float


def _photo(photo: Path, width: int, height: int) -> np.ndarray:
    from PIL import Image

    with Image.open(photo) as image:
        return (
            np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255
        )


def _facing_quats(rng: np.random.Generator, n: int, max_tilt_deg: float = 35.0) -> np.ndarray:
    """Unit quaternions (w first): any turn about the view axis z, then a tilt of up to ``max_tilt_deg``
    about a random axis in the image plane, so flat splats face the camera roughly, as SHARP's do."""
    spin = rng.uniform(0, np.pi, n)
    q_spin = np.stack([np.cos(spin), np.zeros(n), np.zeros(n), np.sin(spin)], axis=1)
    tilt = np.radians(rng.uniform(0, max_tilt_deg, n)) / 2
    axis = rng.uniform(0, 2 * np.pi, n)
    q_tilt = np.stack([np.cos(tilt), np.sin(tilt) * np.cos(axis), np.sin(tilt) * np.sin(axis), np.zeros(n)], axis=1)
    w1, x1, y1, z1 = q_tilt.T
    w2, x2, y2, z2 = q_spin.T
    return np.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        axis=1,
    )


def _smooth_depth(u: np.ndarray, v: np.ndarray, near: float, far: float) -> np.ndarray:
    """A smooth depth surface (a tilted, gently waved plane) between near and far, in metres."""
    t = 0.5 + 0.3 * (v - 0.5) + 0.15 * np.sin(5.0 * u + 1.0) * np.cos(3.0 * v)
    return near + (far - near) * np.clip(t, 0.0, 1.0)


def _columns(
    means: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, sigma: np.ndarray, quats: np.ndarray
) -> dict[str, np.ndarray]:
    f_dc = conventions.rgb_to_sh_dc(rgb)
    cols = {
        "x": means[:, 0],
        "y": means[:, 1],
        "z": means[:, 2],
        **{f"f_dc_{i}": f_dc[:, i] for i in range(3)},
        "opacity": conventions.logit(alpha),
        **{f"scale_{i}": np.log(sigma[:, i]) for i in range(3)},
        **{f"rot_{i}": quats[:, i] for i in range(4)},
    }
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in cols.items()}


def _unproject(u_px: np.ndarray, v_px: np.ndarray, z: np.ndarray, cam: SceneCamera) -> np.ndarray:
    return np.stack([(u_px - cam.width / 2) * z / cam.focal, (v_px - cam.height / 2) * z / cam.focal, z], axis=1)


def compact_scene(
    photo: Path, cam: SceneCamera, seed: int = 0, spacing: int = 1, max_tilt_deg: float = 5.0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    gw, gh = cam.width // spacing, cam.height // spacing
    colours = _photo(photo, gw, gh).reshape(-1, 3)
    v, u = np.mgrid[0:gh, 0:gw].astype(np.float64)
    u_px, v_px = (spacing * u + spacing / 2).ravel(), (spacing * v + spacing / 2).ravel()
    z = _smooth_depth(u_px / cam.width, v_px / cam.height, 2.0, 4.0)
    n = len(z)
    sigma_px = rng.uniform(0.45, 0.6, (n, 1)) * spacing * np.array([1.0, 1.25, 0.15])[None, :]
    sigma = sigma_px * (z / cam.focal)[:, None]
    alpha = rng.uniform(0.93, 0.99, n)
    return _columns(_unproject(u_px, v_px, z, cam), colours, alpha, sigma, _facing_quats(rng, n, max_tilt_deg))


def soft_scene(photo: Path, cam: SceneCamera, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = _photo(photo, cam.width, cam.height)
    # Back layer: a jittered 3 px grid of translucent pancakes.
    gw, gh = cam.width // 3, cam.height // 3
    v, u = np.mgrid[0:gh, 0:gw].astype(np.float64)
    u_b = (3 * u + 1.5 + rng.uniform(-0.8, 0.8, u.shape)).ravel()
    v_b = (3 * v + 1.5 + rng.uniform(-0.8, 0.8, v.shape)).ravel()
    z_b = _smooth_depth(u_b / cam.width, v_b / cam.height, 3.0, 4.5) + rng.normal(0, 0.05, len(u_b))
    sig_b = rng.uniform(1.6, 2.6, (len(u_b), 1)) * np.array([1.0, 0.8, 0.15])[None, :]
    a_b = rng.uniform(0.45, 0.85, len(u_b))
    # Front layer: sparse, larger, fainter splats.
    n_f = (cam.width * cam.height) // 40
    u_f, v_f = rng.uniform(0, cam.width, n_f), rng.uniform(0, cam.height, n_f)
    z_f = rng.uniform(1.8, 2.6, n_f)
    sig_f = rng.uniform(1.5, 3.5, (n_f, 1)) * np.array([1.0, 0.6, 0.1])[None, :]
    a_f = rng.uniform(0.15, 0.5, n_f)
    u_px, v_px = np.concatenate([u_b, u_f]), np.concatenate([v_b, v_f])
    z = np.concatenate([z_b, z_f])
    ix = np.clip(u_px.astype(int), 0, cam.width - 1)
    iy = np.clip(v_px.astype(int), 0, cam.height - 1)
    colours = image[iy, ix]
    sigma = np.concatenate([sig_b, sig_f]) * (z / cam.focal)[:, None]
    alpha = np.concatenate([a_b, a_f])
    return _columns(_unproject(u_px, v_px, z, cam), colours, alpha, sigma, _facing_quats(rng, len(z)))


SCENES = {"compact": compact_scene, "soft": soft_scene}


def write_scene(path: Path, kind: str, photo: Path, cam: SceneCamera) -> Path:
    """Write scene ``kind`` as a PLY with SHARP's metadata (camera K = [[f, 0, W/2], [0, f, H/2]])."""
    cols = SCENES[kind](photo, cam)
    n = len(cols["x"])
    ply.write_ply(path, ply.structured(cols), ply.sharp_metadata(cam.focal, (cam.width, cam.height), n, [0.2, 0.6]))
    return path
