"""Depth -> colour for the depth video: the Turbo colormap, without matplotlib.

Turbo (Anton Mikhailov, Google, 2019) is evaluated from its published degree-5 polynomial fit
(Ruofei Du's approximation of the 256-entry table, Apache-2.0; coefficients below) into a 256-entry
table, indexed the way matplotlib indexes a 256-colour map: ``index = clip(floor(x·256), 0, 255)``.
Against matplotlib's turbo table the fit differs by 6/255 on average and 32/255 at most (measured
by scripts/gpu_render_check.py): the same look, not the same bytes.

The reference maps depth linearly from 0 to ``min(max depth of the first frame, 50 m)``, clipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Rows: red, green, blue; columns: coefficients of x⁰ … x⁵.
_TURBO_POLY = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ],
    dtype=np.float64,
)
LUT_SIZE = 256
MAX_DEPTH_M = 50.0


def turbo(x: np.ndarray) -> np.ndarray:
    """The Turbo colour of values in [0, 1] (clipped).

    Args:
        x: (...) values.

    Returns:
        (..., 3) float64 RGB in [0, 1].
    """
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    powers = x[..., None] ** np.arange(6)
    return np.clip(powers @ _TURBO_POLY.T, 0.0, 1.0)


def turbo_lut_u8() -> np.ndarray:
    """(256, 3) uint8 table: entry i is Turbo at i/255, ×255 truncated like the reference's cast."""
    return (turbo(np.arange(LUT_SIZE) / (LUT_SIZE - 1)) * 255.0).astype(np.uint8)


def depth_range(first_depth: Any, max_depth: float = MAX_DEPTH_M) -> float:
    """The depth video's upper limit: the first frame's largest depth, at most ``max_depth`` metres."""
    size = first_depth.numel() if hasattr(first_depth, "numel") else np.size(first_depth)
    top = min(float(first_depth.max()), max_depth) if size else 0.0
    return top if top > 0 else max_depth


def colorize_depth(depth: Any, max_depth: float, lut: Any | None = None) -> Any:
    """Map depths to Turbo colours (numpy or torch, on the tensor's device).

    Args:
        depth: (..., ) depths in metres (numpy array or torch tensor).
        max_depth: depth shown as the last colour; 0 m is the first.
        lut: (256, 3) uint8 table of the same kind and device as ``depth``; built when None.

    Returns:
        (..., 3) uint8 colours, the same kind as ``depth``.
    """
    if type(depth).__module__.startswith("torch"):
        import torch

        table = lut if lut is not None else torch.from_numpy(turbo_lut_u8()).to(depth.device)
        index = (depth.clamp(0.0, max_depth) / max_depth * LUT_SIZE).long().clamp_(0, LUT_SIZE - 1)
        return table[index]
    table_np = lut if lut is not None else turbo_lut_u8()
    index_np = np.clip((np.clip(depth, 0.0, max_depth) / max_depth * LUT_SIZE).astype(np.int64), 0, LUT_SIZE - 1)
    return table_np[index_np]
