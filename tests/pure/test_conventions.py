from __future__ import annotations

import math
import subprocess
import sys

import numpy as np

from sharp_blender.io import conventions as cv

PURE_MODULES = ("conventions", "protocol", "ply", "atomic")


def test_sh_c0_is_the_degree0_harmonic() -> None:
    assert math.isclose(cv.SH_C0, math.sqrt(1 / (4 * math.pi)), rel_tol=1e-15)


def test_srgb_known_values_and_round_trip() -> None:
    encoded = np.linspace(0, 1, 1001, dtype=np.float64)
    linear = cv.srgb_to_linear(encoded)
    assert linear[0] == 0 and math.isclose(linear[-1], 1.0)
    # 0.5 sRGB is 21.4 % linear; below the knee the curve is linear.
    assert math.isclose(cv.srgb_to_linear(np.array(0.5)), 0.21404114048223255, rel_tol=1e-12)
    assert math.isclose(cv.srgb_to_linear(np.array(0.04)), 0.04 / 12.92, rel_tol=1e-12)
    np.testing.assert_allclose(cv.linear_to_srgb(linear), encoded, atol=1e-12)
    assert np.all(np.diff(linear) > 0)


def test_srgb_is_finite_outside_unit_range() -> None:
    x = np.array([-0.5, 1.5], dtype=np.float32)
    assert np.all(np.isfinite(cv.srgb_to_linear(x))) and np.all(np.isfinite(cv.linear_to_srgb(x)))


def test_sh_dc_round_trip() -> None:
    rgb = np.random.default_rng(0).random((100, 3), dtype=np.float32)
    np.testing.assert_allclose(cv.sh_dc_to_rgb(cv.rgb_to_sh_dc(rgb)), rgb, atol=1e-6)


def test_sigmoid_logit_inverse() -> None:
    p = np.array([1e-4, 0.2, 0.5, 0.9], dtype=np.float64)
    np.testing.assert_allclose(cv.sigmoid(cv.logit(p)), p, rtol=1e-12)


def test_sigmoid_keeps_float32_and_its_relative_accuracy_in_both_tails() -> None:
    logits = np.array([-40.0, -17.0, -9.0, -1.0, 0.0, 3.0, 20.0, 100.0, -100.0], dtype=np.float32)
    exact = 1 / (1 + np.exp(-logits.astype(np.float64)))
    got = cv.sigmoid(logits)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[:-1], exact[:-1], rtol=1e-6)
    assert got[-1] == 0.0  # e^-v overflows float32; the true 3.7e-44 is below its normal range
    out = np.full_like(logits, np.nan)
    assert cv.sigmoid(logits, out=out) is out
    np.testing.assert_array_equal(out, got)


def test_opencv_to_blender_is_a_proper_rotation() -> None:
    m = np.array(cv.OPENCV_TO_BLENDER)
    assert np.linalg.det(m[:3, :3]) == 1.0
    np.testing.assert_array_equal(m @ m, np.eye(4))


def test_pure_modules_import_without_bpy_numpy_torch_blocked() -> None:
    code = "import sys; sys.modules['bpy'] = None; sys.modules['torch'] = None\n" + "".join(
        f"import sharp_blender.io.{m}\n" for m in PURE_MODULES
    )
    subprocess.run([sys.executable, "-c", code], check=True)
