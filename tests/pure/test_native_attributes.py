"""sharp_blender.native_attributes: the point attributes of a native Gaussian point cloud (no bpy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sharp_blender import native_attributes, splat
from sharp_blender.io import conventions, ply


def _cols(n: int, rest: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = {name: rng.normal(size=n).astype(np.float32) for name in ply.SHARP_VERTEX_PROPERTIES}
    for i in range(rest):
        cols[f"f_rest_{i}"] = rng.normal(size=n).astype(np.float32)
    return cols


def _read(tmp_path: Path, cols: dict[str, np.ndarray], color_space: int = ply.COLOR_SPACE_SRGB) -> splat.SplatArrays:
    n = len(cols["x"])
    extras = ply.sharp_metadata(100.0, (40, 30), n, [0.1, 1.0])
    extras[5] = ply.metadata_element("color_space", [color_space], "u1")
    path = tmp_path / "a.ply"
    ply.write_ply(path, ply.structured(cols), extras)
    return splat.read(path)


def test_no_bpy() -> None:
    assert "import bpy" not in Path(native_attributes.__file__).read_text()


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_sh_bands_are_coefficient_major_like_blenders_own_importer(degree: int) -> None:
    # PLY f_rest is channel-major: K coefficients of red, then of green, then of blue. Blender 5.3's
    # wm.ply_import (measured) fills radiance:sh_k with (f_rest_k, f_rest_{K+k}, f_rest_{2K+k}).
    per_channel = (degree + 1) ** 2 - 1
    n = 4
    cols = {f"f_rest_{i}": (i + 100 * np.arange(n)).astype(np.float32) for i in range(3 * per_channel)}
    bands = native_attributes.sh_bands(cols)
    assert len(bands) == per_channel
    for k, band in enumerate(bands):
        assert band.shape == (n, 3) and band.dtype == np.float32 and band.flags.c_contiguous
        np.testing.assert_array_equal(band[1], [100 + k, 100 + per_channel + k, 100 + 2 * per_channel + k])


def test_sh_bands_need_a_whole_rgb_run() -> None:
    assert native_attributes.sh_bands({"f_rest_0": np.zeros(2), "f_rest_1": np.zeros(2)}) == []
    assert native_attributes.sh_bands({"f_dc_0": np.zeros(2)}) == []
    # A gap ends the run: f_rest_0..2 are one coefficient, f_rest_4 is not part of it.
    cols = {f"f_rest_{i}": np.full(2, i, np.float32) for i in (0, 1, 2, 4)}
    assert native_attributes.sh_rest_count(list(cols)) == 3
    (band,) = native_attributes.sh_bands(cols)
    np.testing.assert_array_equal(band[0], [0, 1, 2])


def test_gaussian_attributes(tmp_path: Path) -> None:
    cols = _cols(300, rest=9)
    arrays = _read(tmp_path, cols)
    origin = np.array([0.5, -1.0, 3.0])
    attrs = {a.name: a for a in native_attributes.gaussian_attributes(arrays, origin)}
    assert list(attrs) == ["position", "scale", "rotation", "radiance:base", *(f"radiance:sh_{k}" for k in range(3))]
    xyz = np.stack([cols[a] for a in "xyz"], axis=1)
    np.testing.assert_allclose(attrs["position"].values, xyz - origin, atol=1e-6)
    assert (attrs["position"].data_type, attrs["position"].key) == ("FLOAT_VECTOR", "vector")
    scales = np.exp(np.stack([cols[f"scale_{i}"] for i in range(3)], axis=1))
    np.testing.assert_allclose(attrs["scale"].values, scales, rtol=1e-6)
    q = np.stack([cols[f"rot_{i}"] for i in range(4)], axis=1).astype(np.float64)
    np.testing.assert_allclose(attrs["rotation"].values, q / np.linalg.norm(q, axis=1, keepdims=True), atol=1e-6)
    assert (attrs["rotation"].data_type, attrs["rotation"].key) == ("QUATERNION", "value")
    base = attrs["radiance:base"]
    assert (base.data_type, base.key, base.values.shape) == ("FLOAT4", "vector", (300, 4))
    # f_dc goes in unchanged (Blender decodes 0.5 + C0·f_dc as sRGB itself); alpha is sigmoid(opacity).
    np.testing.assert_array_equal(base.values[:, :3], np.stack([cols[f"f_dc_{i}"] for i in range(3)], axis=1))
    np.testing.assert_allclose(base.values[:, 3], 1 / (1 + np.exp(-cols["opacity"].astype(np.float64))), rtol=1e-6)
    for a in attrs.values():
        assert a.values.flags.c_contiguous and a.values.dtype == np.float32


def test_linear_colour_files_are_encoded_for_blenders_srgb_decoding(tmp_path: Path) -> None:
    cols = _cols(50)
    rgb_linear = np.random.default_rng(3).uniform(0, 1, (50, 3)).astype(np.float32)
    for i in range(3):
        cols[f"f_dc_{i}"] = conventions.rgb_to_sh_dc(rgb_linear[:, i]).astype(np.float32)
    arrays = _read(tmp_path, cols, color_space=ply.COLOR_SPACE_LINEAR)
    base = native_attributes.gaussian_attributes(arrays, np.zeros(3))[3].values
    decoded = conventions.srgb_to_linear(conventions.sh_dc_to_rgb(base[:, :3].astype(np.float64)))
    np.testing.assert_allclose(decoded, rgb_linear, atol=1e-5)


def test_property_attributes_keep_every_property_and_type(tmp_path: Path) -> None:
    cols = _cols(20, rest=3)
    arrays = _read(tmp_path, cols)
    attrs = native_attributes.property_attributes(arrays)
    assert [a.name for a in attrs] == list(cols)
    for a in attrs:
        assert (a.data_type, a.key) == ("FLOAT", "value")
        np.testing.assert_array_equal(a.values, cols[a.name])
