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


def _by_name(arrays: splat.SplatArrays, origin: np.ndarray) -> dict[str, native_attributes.Attribute]:
    return {a.name: a for a in native_attributes.cloud_attributes(arrays, origin)}


def _check_renderer_attributes(
    attrs: dict[str, native_attributes.Attribute], cols: dict[str, np.ndarray], origin: np.ndarray
) -> None:
    xyz = np.stack([cols[a] for a in "xyz"], axis=1)
    np.testing.assert_allclose(attrs["position"].values, xyz - origin, atol=1e-6)
    assert (attrs["position"].data_type, attrs["position"].key) == ("FLOAT_VECTOR", "vector")
    scales = np.exp(np.stack([cols[f"scale_{i}"] for i in range(3)], axis=1).astype(np.float64))
    np.testing.assert_allclose(attrs["scale"].values, scales, rtol=1e-6)
    q = np.stack([cols[f"rot_{i}"] for i in range(4)], axis=1).astype(np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    unit = np.where(norm > 0, q / np.where(norm > 0, norm, 1), [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(attrs["rotation"].values, unit, atol=1e-6)
    assert (attrs["rotation"].data_type, attrs["rotation"].key) == ("QUATERNION", "value")
    base = attrs["radiance:base"]
    assert (base.data_type, base.key, base.values.shape) == ("FLOAT4", "vector", (len(xyz), 4))
    np.testing.assert_allclose(base.values[:, 3], 1 / (1 + np.exp(-cols["opacity"].astype(np.float64))), rtol=1e-6)
    for a in attrs.values():
        assert a.values.flags.c_contiguous and a.values.dtype == np.float32, a.name


def test_cloud_attributes(tmp_path: Path) -> None:
    cols = _cols(300, rest=9)
    arrays = _read(tmp_path, cols)
    assert arrays.table is not None  # all float32: the rows are read in place
    origin = np.array([0.5, -1.0, 3.0])
    attrs = _by_name(arrays, origin)
    # The properties the renderer's attributes hold exactly are not stored twice (export reads them back).
    assert list(attrs) == [
        "position", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
        "scale", "rotation", "radiance:base", "radiance:sh_0", "radiance:sh_1", "radiance:sh_2",
    ]  # fmt: skip
    _check_renderer_attributes(attrs, cols, origin)
    # f_dc goes in unchanged (Blender decodes 0.5 + C0·f_dc as sRGB itself): the file's exact values.
    np.testing.assert_array_equal(
        attrs["radiance:base"].values[:, :3], np.stack([cols[f"f_dc_{i}"] for i in range(3)], 1)
    )
    for k in range(3):  # f_rest is channel-major, the bands coefficient-major, all exact
        expected = np.stack([cols[f"f_rest_{c * 3 + k}"] for c in range(3)], axis=1)
        np.testing.assert_array_equal(attrs[f"radiance:sh_{k}"].values, expected)
    for name in ("opacity", "scale_0", "rot_3"):
        assert (attrs[name].data_type, attrs[name].key) == ("FLOAT", "value")
        np.testing.assert_array_equal(attrs[name].values, cols[name])


@pytest.mark.parametrize("n", [1, 1023, 1024, 1025, 5000])
def test_blocks_cover_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    # Blocks of 1024 rows (the smallest): every row is written, across the block edges.
    monkeypatch.setattr(native_attributes, "_BLOCK_BYTES", 1)
    cols = _cols(n, rest=3, seed=n)
    cols["rot_0"][::7] = cols["rot_1"][::7] = cols["rot_2"][::7] = cols["rot_3"][::7] = 0  # zero -> identity
    origin = np.array([0.1, 0.2, -0.3])
    attrs = _by_name(_read(tmp_path, cols), origin)
    _check_renderer_attributes(attrs, cols, origin)
    np.testing.assert_array_equal(
        attrs["rotation"].values[::7], np.tile([1.0, 0.0, 0.0, 0.0], (len(cols["x"][::7]), 1))
    )
    np.testing.assert_array_equal(attrs["radiance:sh_0"].values, np.stack([cols[f"f_rest_{c}"] for c in range(3)], 1))
    np.testing.assert_array_equal(attrs["opacity"].values, cols["opacity"])


def test_mixed_types_take_the_column_path_with_the_same_result(tmp_path: Path) -> None:
    cols = _cols(200, rest=3, seed=4)
    table = _by_name(_read(tmp_path, cols), np.zeros(3))
    mixed = dict(cols)
    mixed["f_dc_1"] = cols["f_dc_1"].astype(np.float64)  # a double f_dc: radiance:base cannot hold it exactly
    mixed["label"] = np.arange(200, dtype=np.uint8)
    arrays = _read(tmp_path, mixed)
    assert arrays.table is None
    attrs = _by_name(arrays, np.zeros(3))
    assert "f_dc_0" not in attrs and "f_dc_1" in attrs and attrs["label"].data_type == "INT"
    np.testing.assert_array_equal(attrs["label"].values, np.arange(200))
    for name in ("position", "scale", "rotation", "radiance:base", "radiance:sh_0"):
        np.testing.assert_array_equal(attrs[name].values, table[name].values, err_msg=name)


def test_held_natively(tmp_path: Path) -> None:
    cols = _cols(10, rest=9)
    srgb = native_attributes.held_natively(_read(tmp_path, cols))
    assert srgb == {"x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", *(f"f_rest_{i}" for i in range(9))}
    # A linear file's radiance:base is re-encoded, so its f_dc stay; f_rest that are no whole RGB run stay.
    cols = _cols(10, rest=4)
    linear = native_attributes.held_natively(_read(tmp_path, cols, color_space=ply.COLOR_SPACE_LINEAR))
    assert linear == {"x", "y", "z"}


def test_linear_colour_files_are_encoded_for_blenders_srgb_decoding(tmp_path: Path) -> None:
    cols = _cols(50)
    rgb_linear = np.random.default_rng(3).uniform(0, 1, (50, 3)).astype(np.float32)
    for i in range(3):
        cols[f"f_dc_{i}"] = conventions.rgb_to_sh_dc(rgb_linear[:, i]).astype(np.float32)
    arrays = _read(tmp_path, cols, color_space=ply.COLOR_SPACE_LINEAR)
    attrs = _by_name(arrays, np.zeros(3))
    base = attrs["radiance:base"].values
    decoded = conventions.srgb_to_linear(conventions.sh_dc_to_rgb(base[:, :3].astype(np.float64)))
    np.testing.assert_allclose(decoded, rgb_linear, atol=1e-5)
    for i in range(3):  # kept as they are, for export
        np.testing.assert_array_equal(attrs[f"f_dc_{i}"].values, cols[f"f_dc_{i}"])
