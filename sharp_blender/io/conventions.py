"""The project's conventions, defined once: SH C0, sRGB <-> linear, OpenCV -> Blender, quaternion order.

This module imports neither bpy, numpy nor torch, so the add-on, the sidecar (which ships this file
as ``sharp_sidecar.io.conventions``) and plain tests share it. The colour functions accept numpy arrays
and torch tensors alike and return the same kind.

Quaternions are always stored **w first** (w, x, y, z), as in 3DGS PLYs, gsplat and Blender.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

A = TypeVar("A")

# Degree-0 real spherical harmonic: f_dc = (colour - 0.5) / C0.
SH_C0 = 0.28209479177387814

# OpenCV camera axes (x right, y down, z forward) -> Blender camera axes (x right, y up, looking down -z).
# A 180 degree rotation about x (det +1), so splat rotations stay proper.
OPENCV_TO_BLENDER = (
    (1.0, 0.0, 0.0, 0.0),
    (0.0, -1.0, 0.0, 0.0),
    (0.0, 0.0, -1.0, 0.0),
    (0.0, 0.0, 0.0, 1.0),
)

QUATERNION_ORDER = "wxyz"

_SRGB_KNEE_LINEAR = 0.0031308
_SRGB_KNEE_ENCODED = 0.04045


def _where(mask: Any, a: Any, b: Any) -> Any:
    if type(mask).__module__.startswith("torch"):
        import torch

        return torch.where(mask, a, b)
    import numpy as np

    return np.where(mask, a, b)


def srgb_to_linear(v: A) -> A:
    """sRGB EOTF: encoded values in [0, 1] -> scene-linear."""
    x: Any = v
    hi = ((x.clip(min=_SRGB_KNEE_ENCODED) + 0.055) / 1.055) ** 2.4
    return _where(x <= _SRGB_KNEE_ENCODED, x / 12.92, hi)  # type: ignore[no-any-return]


def linear_to_srgb(v: A) -> A:
    """sRGB OETF: scene-linear values in [0, 1] -> encoded."""
    x: Any = v
    hi = 1.055 * x.clip(min=_SRGB_KNEE_LINEAR) ** (1.0 / 2.4) - 0.055
    return _where(x <= _SRGB_KNEE_LINEAR, 12.92 * x, hi)  # type: ignore[no-any-return]


def sh_dc_to_rgb(f_dc: A) -> A:
    """3DGS `f_dc_*` -> the colour it encodes (for SHARP PLYs: sRGB-encoded)."""
    x: Any = f_dc
    return x * SH_C0 + 0.5  # type: ignore[no-any-return]


def rgb_to_sh_dc(rgb: A) -> A:
    x: Any = rgb
    return (x - 0.5) / SH_C0  # type: ignore[no-any-return]


def sigmoid(v: A, out: Any = None) -> A:
    """1 / (1 + e^-v). With ``out`` (a numpy array of v's shape) it is computed there, with no temporaries.

    The exp form keeps its relative accuracy for very negative v in float32, where 0.5 (1 + tanh(v / 2))
    cancels (it gives 0 below v = -17).
    """
    x: Any = v
    if type(x).__module__.startswith("torch"):
        return x.sigmoid()  # type: ignore[no-any-return]
    import numpy as np

    if out is None:
        out = np.empty_like(x, dtype=np.result_type(x, np.float32))
    with np.errstate(over="ignore"):  # e^-v = inf for v < -88 (float32): 1 / inf = 0, as it should be
        np.negative(x, out=out)
        np.exp(out, out=out)
    np.add(out, 1.0, out=out)
    return np.reciprocal(out, out=out)  # type: ignore[no-any-return]


def logit(v: A) -> A:
    """ln(p / (1 - p)), unclamped like the reference PLY writer."""
    x: Any = v
    if type(x).__module__.startswith("torch"):
        return (x / (1.0 - x)).log()  # type: ignore[no-any-return]
    import numpy as np

    with np.errstate(divide="ignore"):
        return np.log(x / (1.0 - x))  # type: ignore[no-any-return]


def diagonal_35mm_mm() -> float:
    """Diagonal of a 36x24 mm full-frame sensor, the reference for 35 mm-equivalent focal lengths."""
    return math.hypot(36.0, 24.0)
