"""Rotating the view-dependent colour of 3D Gaussians: real SH bands 1-3 (``f_rest_*``). No bpy.

A splat's colour seen along direction d is ``Σ c_lm Y_lm(d)``. When the splats turn by R, the colour
must turn with them: the new coefficients c' satisfy ``Σ c'_lm Y_lm(d) = Σ c_lm Y_lm(Rᵀd)``. This is the
convention of PlayCanvas splat-transform's ``-r`` (and SuperSplat's export): each band l is mixed by a
(2l+1)² matrix D_l(R); band 0 (``f_dc_*``) does not change.

Basis: 3DGS's real SH (the INRIA renderer's constants), band 1 = C1·(−y, z, −x), band 2 = (xy, −yz, 3z²−1,
−xz, x²−y²)·C2, band 3 alike. That is the textbook real SH (no Condon-Shortley phase, order m = −l..l)
times (−1)^m, so D_l is built in the textbook basis by the Ivanic-Ruedenberg recurrence
(J. Phys. Chem. 1996, 100, 6342; erratum 1998) and then conjugated by those signs.

PLY layout: ``f_rest_0 .. f_rest_{3K-1}`` is channel-major, K = (L+1)² − 1 coefficients per channel:
``f_rest_{c·K + k}`` is channel c (R, G, B), coefficient k (band 1 first).
"""

from __future__ import annotations

import math

import numpy as np

MAX_DEGREE = 3
_REST_COUNTS = {3 * ((degree + 1) ** 2 - 1): degree for degree in range(MAX_DEGREE + 1)}  # 0, 9, 24, 45


def degree_of(rest_count: int) -> int:
    """SH degree from the number of ``f_rest_*`` properties (0, 9, 24 or 45).

    Raises:
        ValueError: any other count, which is not a 3DGS layout this module can rotate.
    """
    if rest_count not in _REST_COUNTS:
        raise ValueError(
            f"{rest_count} f_rest properties do not form SH bands of degree 1-3 (expected 9, 24 or 45 for "
            "3 colour channels)"
        )
    return _REST_COUNTS[rest_count]


def _band_signs(degree: int) -> np.ndarray:
    # 3DGS basis = textbook real SH times (-1)^m.
    return np.array([(-1.0) ** abs(m) for m in range(-degree, degree + 1)])


def _next_band(r1: np.ndarray, prev: np.ndarray, band: int) -> np.ndarray:
    """D_l from D_1 (``r1``) and D_{l-1} (``prev``), both indexed [m + l, m' + l] (Ivanic-Ruedenberg)."""
    lv = band

    def r(i: int, j: int) -> float:
        return float(r1[i + 1, j + 1])

    def p(i: int, a: int, b: int) -> float:
        def q(x: int, y: int) -> float:
            return float(prev[x + lv - 1, y + lv - 1])

        if b == lv:
            return r(i, 1) * q(a, lv - 1) - r(i, -1) * q(a, -lv + 1)
        if b == -lv:
            return r(i, 1) * q(a, -lv + 1) + r(i, -1) * q(a, lv - 1)
        return r(i, 0) * q(a, b)

    out = np.zeros((2 * lv + 1, 2 * lv + 1))
    for m in range(-lv, lv + 1):
        am = abs(m)
        for n in range(-lv, lv + 1):
            denom = (lv + n) * (lv - n) if abs(n) < lv else (2 * lv) * (2 * lv - 1)
            zero = 1.0 if m == 0 else 0.0
            u = math.sqrt((lv + m) * (lv - m) / denom)
            v = 0.5 * math.sqrt((1 + zero) * (lv + am - 1) * (lv + am) / denom) * (1 - 2 * zero)
            w = -0.5 * math.sqrt((lv - am - 1) * (lv - am) / denom) * (1 - zero)
            value = u * p(0, m, n) if u else 0.0
            if v:
                if m == 0:
                    big_v = p(1, 1, n) + p(-1, -1, n)
                elif m > 0:
                    d1 = 1.0 if m == 1 else 0.0
                    big_v = p(1, m - 1, n) * math.sqrt(1 + d1) - (p(-1, -m + 1, n) * (1 - d1) if not d1 else 0.0)
                else:
                    d1 = 1.0 if m == -1 else 0.0
                    big_v = (p(1, m + 1, n) * (1 - d1) if not d1 else 0.0) + p(-1, -m - 1, n) * math.sqrt(1 + d1)
                value += v * big_v
            if w:
                big_w = p(1, m + 1, n) + p(-1, -m - 1, n) if m > 0 else p(1, m - 1, n) - p(-1, -m + 1, n)
                value += w * big_w
            out[m + lv, n + lv] = value
    return out


def band_matrices(rotation: np.ndarray, degree: int = MAX_DEGREE) -> list[np.ndarray]:
    """[D_1, ..., D_degree]: D_l (2l+1, 2l+1) maps band-l coefficients (3DGS basis) of a colour to those of
    the colour turned by ``rotation`` (a proper 3x3 rotation matrix)."""
    R = np.asarray(rotation, dtype=np.float64)
    if R.shape != (3, 3) or not np.allclose(R @ R.T, np.eye(3), atol=1e-5) or np.linalg.det(R) <= 0:
        raise ValueError("SH rotation needs a proper 3x3 rotation matrix")
    axes = (1, 2, 0)  # textbook band 1 is (y, z, x)
    textbook = [R[np.ix_(axes, axes)]]
    for band in range(2, degree + 1):
        textbook.append(_next_band(textbook[0], textbook[-1], band))
    out = []
    for band, matrix in enumerate(textbook[:degree], start=1):
        signs = _band_signs(band)
        out.append(signs[:, None] * matrix * signs[None, :])
    return out


def f_rest_matrix(rotation: np.ndarray, rest_count: int) -> np.ndarray:
    """The (3K, 3K) matrix M with ``f_rest' = M @ f_rest`` for one splat (block diagonal: channel, band)."""
    degree = degree_of(rest_count)
    per_channel = rest_count // 3
    out = np.zeros((rest_count, rest_count))
    start = 0
    for band, matrix in enumerate(band_matrices(rotation, degree) if degree else [], start=1):
        width = 2 * band + 1
        for channel in range(3):
            first = channel * per_channel + start
            out[first : first + width, first : first + width] = matrix
        start += width
    return out


def rotate_f_rest(f_rest: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rotate ``f_rest`` (N, 3K) in the PLY's channel-major layout; returns a new float32 array.

    Raises:
        ValueError: 3K is not 9, 24 or 45, or ``rotation`` is not a rotation.
    """
    f_rest = np.asarray(f_rest)
    count = f_rest.shape[1] if f_rest.ndim == 2 else -1
    matrix = f_rest_matrix(rotation, count)
    # One float32 GEMM over all splats (the block-diagonal zeros cost less than per-band slicing).
    return np.ascontiguousarray(f_rest, dtype=np.float32) @ matrix.T.astype(np.float32)
