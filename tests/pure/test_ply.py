from __future__ import annotations

from pathlib import Path

import numpy as np
import plyfile
import pytest

from sharp_blender.io import ply


def _sharp_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(n).astype(np.float32) for name in ply.SHARP_VERTEX_PROPERTIES}


def test_sharp_layout_header_matches_reference_bytes(tmp_path: Path, reference_npz) -> None:  # type: ignore[no-untyped-def]
    ref = reference_npz("photo_exif")
    n = int(ref["num_gaussians"])
    vertex = ply.structured(_sharp_columns(n))
    meta = ply.sharp_metadata(float(ref["f_px"]), (600, 400), n, ref["ply_disparity"])
    path = tmp_path / "scene.ply"
    ply.write_ply(path, vertex, meta)
    data = path.read_bytes()
    header = str(ref["ply_header"]).encode("ascii")
    assert data[: len(header)] == header
    assert len(data) == int(ref["ply_file_size"])
    contents = ply.read_ply(path)
    for name in ("extrinsic", "intrinsic", "image_size", "frame", "color_space", "version"):
        got = contents.scalar_element(name)
        assert got is not None and got.dtype == ref[f"ply_{name}"].dtype, name
        np.testing.assert_array_equal(got, ref[f"ply_{name}"], err_msg=name)


def test_round_trip_and_plyfile_agrees(tmp_path: Path) -> None:
    cols = _sharp_columns(1000)
    path = tmp_path / "a.ply"
    ply.write_ply(path, ply.structured(cols), ply.sharp_metadata(500.0, (64, 48), 1000, [0.1, 0.9]))
    splats = ply.read_gaussians(path)
    np.testing.assert_array_equal(splats.means[:, 1], cols["y"])
    np.testing.assert_array_equal(splats.quats_wxyz[:, 0], cols["rot_0"])
    assert splats.camera is not None and splats.camera.image_size == (64, 48)
    np.testing.assert_array_equal(splats.camera.K, [[500, 0, 32], [0, 500, 24], [0, 0, 1]])
    assert splats.color_space == ply.COLOR_SPACE_SRGB
    independent = plyfile.PlyData.read(str(path))
    np.testing.assert_array_equal(independent["vertex"]["opacity"], cols["opacity"])
    assert [e.name for e in independent.elements][1:] == [
        "extrinsic",
        "intrinsic",
        "image_size",
        "frame",
        "disparity",
        "color_space",
        "version",
    ]


def test_generic_big_endian_ply_with_extra_properties(tmp_path: Path) -> None:
    n = 50
    rng = np.random.default_rng(1)
    names = ["nx", "ny", "nz", *ply.SHARP_VERTEX_PROPERTIES[::-1], *(f"f_rest_{i}" for i in range(45))]
    arr = np.empty(n, dtype=[(name, ">f4") for name in names])
    for name in names:
        arr[name] = rng.standard_normal(n)
    path = tmp_path / "generic.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(arr, "vertex")], byte_order=">").write(str(path))
    splats = ply.read_gaussians(path)
    assert splats.count == n and splats.camera is None and splats.color_space is None
    np.testing.assert_array_equal(splats.f_dc[:, 2], arr["f_dc_2"].astype(np.float32))
    assert "f_rest_44" in splats.ply.vertex.dtype.names


def test_truncated_and_foreign_files_give_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.ply"
    ply.write_ply(path, ply.structured(_sharp_columns(100)))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ply.PlyError, match="truncated"):
        ply.read_gaussians(path)
    mesh = tmp_path / "mesh.ply"
    ply.write_ply(mesh, ply.structured({"x": np.zeros(3, "f4"), "y": np.zeros(3, "f4"), "z": np.zeros(3, "f4")}))
    with pytest.raises(ply.PlyError, match="f_dc_0"):
        ply.read_gaussians(mesh)
    jpeg = tmp_path / "photo.ply"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0 not a ply")
    with pytest.raises(ply.PlyError, match="not a PLY"):
        ply.read_gaussians(jpeg)


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    bad = np.zeros(3, dtype=[("x", "c8")])  # complex: not a PLY type
    with pytest.raises(ValueError):
        ply.write_ply(tmp_path / "x.ply", bad)
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_ordinary_permissions(tmp_path: Path) -> None:
    import os

    path = tmp_path / "p.ply"
    ply.write_ply(path, ply.structured(_sharp_columns(4)))
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
