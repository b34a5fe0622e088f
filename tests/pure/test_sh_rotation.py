"""SH rotation (bands 1-3) against an independent rotation: sample the colour, turn the directions, refit.

The reference never uses sh_rotation's recurrence: it evaluates the 3DGS real SH basis (the INRIA
renderer's constants, written out here) at many directions, and least-squares fits the coefficients of
the turned colour ``d -> colour(Rᵀ d)``. Band-1 values from PlayCanvas splat-transform's own tests pin
the direction convention of its ``-r``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sharp_blender import sh_rotation

C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def basis(d: np.ndarray) -> np.ndarray:
    """(M, 3) unit directions -> (M, 15) 3DGS SH basis, bands 1-3, in f_rest order."""
    x, y, z = d.T
    xx, yy, zz = x * x, y * y, z * z
    return np.stack(
        [
            -C1 * y, C1 * z, -C1 * x,
            C2[0] * x * y, C2[1] * y * z, C2[2] * (2 * zz - xx - yy), C2[3] * x * z, C2[4] * (xx - yy),
            C3[0] * y * (3 * xx - yy), C3[1] * x * y * z, C3[2] * y * (4 * zz - xx - yy),
            C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy), C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3 * yy),
        ],
        axis=1,
    )  # fmt: skip


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    return q if np.linalg.det(q) > 0 else -q


def directions(m: int, rng: np.random.Generator) -> np.ndarray:
    d = rng.normal(size=(m, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def fitted_rotation(coeffs: np.ndarray, R: np.ndarray, degree: int, rng: np.random.Generator) -> np.ndarray:
    """Coefficients (per channel, K) of d -> colour(Rᵀ d), by least squares over 2000 directions."""
    k = (degree + 1) ** 2 - 1
    d = directions(2000, rng)
    turned = basis(d @ R)[:, :k] @ coeffs.T  # row i: colour at Rᵀ d_i (d_i @ R == (Rᵀ d_i)ᵀ)
    solution, *_ = np.linalg.lstsq(basis(d)[:, :k], turned, rcond=None)
    return solution.T


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_matches_an_independent_least_squares_rotation(degree: int) -> None:
    rng = np.random.default_rng(degree)
    k = (degree + 1) ** 2 - 1
    n = 40
    f_rest = rng.normal(0, 0.5, size=(n, 3 * k)).astype(np.float32)
    worst = 0.0
    for _ in range(5):
        R = random_rotation(rng)
        got = sh_rotation.rotate_f_rest(f_rest, R).reshape(n, 3, k)
        expected = fitted_rotation(f_rest.reshape(n * 3, k).astype(np.float64), R, degree, rng).reshape(n, 3, k)
        worst = max(worst, float(np.abs(got - expected).max()))
    assert worst < 1e-5, worst


def test_turned_colour_is_the_colour_seen_from_the_turned_direction() -> None:
    rng = np.random.default_rng(7)
    f_rest = rng.normal(0, 1, size=(10, 45))
    R = random_rotation(rng)
    rotated = sh_rotation.rotate_f_rest(f_rest, R).astype(np.float64)
    d = directions(500, rng)
    for c in range(3):
        original = f_rest[:, c * 15 : (c + 1) * 15]
        turned = rotated[:, c * 15 : (c + 1) * 15]
        # the turned splat seen along R d looks as the original seen along d
        np.testing.assert_allclose(basis(d @ R.T) @ turned.T, basis(d) @ original.T, atol=2e-5)


def _euler_xyz_degrees(x: float, y: float, z: float) -> np.ndarray:
    """PlayCanvas Quat.setFromEulerAngles(x, y, z) as a matrix: R = Rz · Ry · Rx."""

    def axis(i: int, deg: float) -> np.ndarray:
        c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
        j, k = (i + 1) % 3, (i + 2) % 3
        m = np.eye(3)
        m[j, j], m[j, k], m[k, j], m[k, k] = c, -s, s, c
        return m

    return axis(2, z) @ axis(1, y) @ axis(0, x)


@pytest.mark.parametrize(
    "euler, expected",
    [
        # splat-transform test/rotate-sh.test.mjs, "band 1 known values": input (1, 2, 3)
        ((0, 0, 90), (3, 2, -1)),
        ((0, 90, 0), (1, 3, -2)),
        ((90, 0, 0), (2, -1, 3)),
        ((0, 0, 180), (-1, 2, -3)),
    ],
)
def test_band_1_follows_splat_transform(euler: tuple[float, float, float], expected: tuple[float, ...]) -> None:
    f_rest = np.array([[1, 2, 3, 1, 2, 3, 1, 2, 3]], np.float32)
    out = sh_rotation.rotate_f_rest(f_rest, _euler_xyz_degrees(*euler))
    np.testing.assert_allclose(out[0], np.tile(expected, 3), atol=1e-6)


def test_channels_rotate_on_their_own_and_bands_keep_their_energy() -> None:
    rng = np.random.default_rng(3)
    f_rest = np.zeros((1, 45), np.float32)
    f_rest[0, 15:30] = rng.normal(size=15)  # green only
    out = sh_rotation.rotate_f_rest(f_rest, random_rotation(rng))
    assert not out[0, :15].any() and not out[0, 30:].any()
    for start, width in ((15, 3), (18, 5), (23, 7)):
        assert math.isclose(
            float(np.sum(out[0, start : start + width] ** 2)),
            float(np.sum(f_rest[0, start : start + width] ** 2)),
            rel_tol=1e-5,
        )


def test_identity_and_inverse() -> None:
    rng = np.random.default_rng(4)
    f_rest = rng.normal(size=(6, 24)).astype(np.float32)
    np.testing.assert_allclose(sh_rotation.rotate_f_rest(f_rest, np.eye(3)), f_rest, atol=1e-7)
    R = random_rotation(rng)
    back = sh_rotation.rotate_f_rest(sh_rotation.rotate_f_rest(f_rest, R), R.T)
    np.testing.assert_allclose(back, f_rest, atol=1e-5)


@pytest.mark.parametrize("count", [1, 3, 15, 48])
def test_unknown_layouts_are_refused(count: int) -> None:
    with pytest.raises(ValueError, match="9, 24 or 45"):
        sh_rotation.rotate_f_rest(np.zeros((2, count)), np.eye(3))


def test_mirror_is_refused() -> None:
    with pytest.raises(ValueError, match="proper"):
        sh_rotation.band_matrices(np.diag([1.0, 1.0, -1.0]))


def test_matches_splat_transforms_own_rotation() -> None:
    """Values computed by splat-transform's RotateSH itself (see the fixture's ``about``)."""
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).parent / "data" / "splat_transform_rotate_sh.json").read_text())
    assert len(doc["cases"]) >= 5
    for case in doc["cases"]:
        f_rest = np.tile(np.asarray(case["coeffs"], np.float32), 3)[None]
        got = sh_rotation.rotate_f_rest(f_rest, np.asarray(case["R"]))[0]
        np.testing.assert_allclose(got, np.tile(case["rotated"], 3), atol=1e-5, rtol=0)
