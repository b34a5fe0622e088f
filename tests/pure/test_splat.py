"""sharp_blender.splat: PLY -> arrays for Blender (fast and general paths), display colour, metadata JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sharp_blender import splat
from sharp_blender.io import conventions, ply


def _cols(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=n).astype(np.float32) for name in ply.SHARP_VERTEX_PROPERTIES}


def test_no_bpy() -> None:
    assert "import bpy" not in Path(splat.__file__).read_text()


@pytest.mark.parametrize("n", [1, 8191, 8192, 20001])  # around the blocked transpose's chunk size (0: tests/faults)
def test_fast_path_columns_equal_the_file(tmp_path: Path, n: int) -> None:
    cols = _cols(n)
    cols["f_rest_0"] = np.arange(n, dtype=np.float32)
    path = tmp_path / "a.ply"
    ply.write_ply(path, ply.structured(cols), ply.sharp_metadata(100.0, (40, 30), n, [0.1, 1.0]))
    arrays = splat.read(path)
    assert arrays.count == n
    assert [p for p, _, _ in arrays.properties] == list(cols)
    for name, kind, values in arrays.properties:
        assert kind == "f4" and values.flags.c_contiguous and values.dtype == np.float32
        np.testing.assert_array_equal(values, cols[name])
    np.testing.assert_array_equal(arrays.means_cv, np.stack([cols["x"], cols["y"], cols["z"]], axis=1))
    assert arrays.camera is not None and arrays.camera.image_size == (40, 30)


def test_general_path_matches_for_mixed_types_and_big_endian(tmp_path: Path) -> None:
    n = 50
    cols = _cols(n)
    rng = np.random.default_rng(1)
    extra = {"red": rng.integers(0, 255, n).astype(np.uint8), "w": rng.normal(size=n)}
    names = [*cols, *extra]
    values = {**cols, **extra}
    kinds = {name: values[name].dtype.str[1:] for name in names}
    dtype = np.dtype([(name, ">" + kinds[name]) for name in names])
    vertex = np.empty(n, dtype=dtype)
    for name in names:
        vertex[name] = values[name]
    header = ["ply", "format binary_big_endian 1.0", f"element vertex {n}"]
    ply_names = {"f4": "float", "u1": "uchar", "f8": "double"}
    header += [f"property {ply_names[kinds[name]]} {name}" for name in names]
    path = tmp_path / "be.ply"
    path.write_bytes(("\n".join([*header, "end_header"]) + "\n").encode() + vertex.tobytes())
    arrays = splat.read(path)
    got = {name: (kind, v) for name, kind, v in arrays.properties}
    assert got["red"][0] == "u1" and got["red"][1].dtype == np.int32
    np.testing.assert_array_equal(got["red"][1], extra["red"])
    assert got["w"][0] == "f8" and got["w"][1].dtype == np.float32
    np.testing.assert_array_equal(got["x"][1], cols["x"])
    assert arrays.camera is None


def test_derived_display_attributes(tmp_path: Path) -> None:
    cols = _cols(200)
    cols["rot_0"][:3] = 0
    cols["rot_1"][:3] = 0
    cols["rot_2"][:3] = 0
    cols["rot_3"][:3] = 0  # zero quaternions -> identity
    path = tmp_path / "d.ply"
    ply.write_ply(path, ply.structured(cols))
    derived = splat.derive(splat.read(path))
    f_dc = np.stack([cols[f"f_dc_{i}"] for i in range(3)], axis=1).astype(np.float64)
    np.testing.assert_allclose(
        derived.col[:, :3], conventions.srgb_to_linear(np.clip(0.5 + conventions.SH_C0 * f_dc, 0, 1)), atol=1e-6
    )
    np.testing.assert_allclose(derived.col[:, 3], 1 / (1 + np.exp(-cols["opacity"].astype(np.float64))), atol=1e-6)
    ls = np.stack([cols[f"scale_{i}"] for i in range(3)], axis=1).astype(np.float64)
    np.testing.assert_allclose(derived.scale, np.exp(ls), rtol=1e-6)
    q = np.stack([cols[f"rot_{i}"] for i in range(4)], axis=1).astype(np.float64)
    np.testing.assert_allclose(derived.rotation[3:], q[3:] / np.linalg.norm(q[3:], axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(derived.rotation[:3], [[1, 0, 0, 0]] * 3)
    assert all(a.flags.c_contiguous for a in (derived.col, derived.scale, derived.rotation))


def test_linear_colour_space_is_not_converted_again() -> None:
    f_dc = [np.array([conventions.rgb_to_sh_dc(0.25)], np.float32)] * 3
    linear = splat.display_colour(f_dc, np.array([0.0], np.float32), ply.COLOR_SPACE_LINEAR)
    srgb = splat.display_colour(f_dc, np.array([0.0], np.float32), ply.COLOR_SPACE_SRGB)
    np.testing.assert_allclose(linear[0], [0.25, 0.25, 0.25, 0.5], atol=1e-6)
    np.testing.assert_allclose(srgb[0, :3], conventions.srgb_to_linear(np.array([0.25] * 3)), atol=1e-6)


def test_metadata_elements_round_trip_through_json(tmp_path: Path) -> None:
    path = tmp_path / "m.ply"
    extras = ply.sharp_metadata(321.5, (64, 48), 3, [0.25, 2.5])
    ply.write_ply(path, ply.structured(_cols(3)), extras)
    text = splat.elements_to_json(ply.read_ply(path))
    back = splat.elements_from_json(text)
    assert [name for name, _ in back] == [name for name, _ in extras]
    for (_, a), (_, b) in zip(back, extras, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_vertex_array_restores_kinds() -> None:
    out = splat.vertex_array({"x": np.array([1.5]), "red": np.array([7], np.int32)}, {"red": "u1"})
    assert out.dtype["x"] == np.dtype("<f4") and out.dtype["red"] == np.dtype("u1")


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "novertex.ply"
    cols = _cols(4)
    del cols["opacity"]
    ply.write_ply(path, ply.structured(cols))
    with pytest.raises(ply.PlyError, match="opacity are missing"):
        splat.read(path)
    big = _cols(2)
    big_u4 = {**big, "id": np.array([1, 2**32 - 1], np.uint32)}
    path = tmp_path / "u4.ply"
    ply.write_ply(path, ply.structured(big_u4))
    with pytest.raises(ply.PlyError, match="above 2"):
        splat.read(path)
