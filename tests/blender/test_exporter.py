"""bpy.ops.sharp.export_ply: round trips, baked transforms, refusal of non-uniform scale."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from mathutils import Euler, Matrix

from sharp_blender import ply


def _sharp_ply(path: Path, n: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 6.0, n)
    cols = {
        "x": rng.uniform(-1, 1, n) * depth,
        "y": rng.uniform(-0.7, 0.7, n) * depth,
        "z": depth,
        **{f"f_dc_{i}": rng.normal(0, 1, n) for i in range(3)},
        "opacity": rng.normal(1, 2, n),
        **{f"scale_{i}": rng.normal(-5, 0.5, n) for i in range(3)},
        **{f"rot_{i}": rng.normal(0, 1, n) for i in range(4)},
        "f_rest_0": rng.normal(0, 0.1, n),
    }
    vertex = ply.structured({k: np.asarray(v, np.float32) for k, v in cols.items()})
    ply.write_ply(path, vertex, ply.sharp_metadata(700.0, (640, 480), n, [0.2, 1.5]))
    return path


def _import(path: Path) -> bpy.types.Object:
    assert bpy.ops.sharp.import_ply(filepath=str(path), display="POINTS") == {"FINISHED"}
    obj = bpy.data.objects[path.stem]
    bpy.context.view_layer.objects.active = obj
    return obj


def test_round_trip_in_the_camera_frame(clean_scene: bpy.types.Scene, tmp_path: Path) -> None:
    src = _sharp_ply(tmp_path / "src.ply")
    _import(src)
    out = tmp_path / "out.ply"
    assert bpy.ops.sharp.export_ply(filepath=str(out), apply_transform=False) == {"FINISHED"}
    a, b = ply.read_ply(src), ply.read_ply(out)
    assert a.vertex.dtype == b.vertex.dtype
    for name in a.vertex.dtype.names:
        if name in "xyz":
            # Positions are stored relative to the scene centre (float32), then moved back.
            np.testing.assert_allclose(b.vertex[name], a.vertex[name], rtol=0, atol=2e-6)
        else:
            np.testing.assert_array_equal(b.vertex[name], a.vertex[name], err_msg=name)
    assert list(a.elements) == list(b.elements)
    for name in a.elements:
        if name != "vertex":
            np.testing.assert_array_equal(a.elements[name], b.elements[name], err_msg=name)


def test_round_trip_of_a_non_sharp_ply_keeps_types(clean_scene: bpy.types.Scene, tmp_path: Path) -> None:
    n = 20
    rng = np.random.default_rng(1)
    cols: dict[str, np.ndarray] = {name: rng.normal(size=n).astype(np.float32) for name in ply.SHARP_VERTEX_PROPERTIES}
    cols["z"] = np.abs(cols["z"]) + 1
    cols["red"] = rng.integers(0, 255, n).astype(np.uint8)
    cols["density"] = rng.normal(size=n).astype(np.float64)
    src = tmp_path / "generic.ply"
    ply.write_ply(src, ply.structured(cols))
    _import(src)
    out = tmp_path / "generic_out.ply"
    assert bpy.ops.sharp.export_ply(filepath=str(out), apply_transform=False) == {"FINISHED"}
    b = ply.read_ply(out)
    assert b.vertex.dtype["red"] == np.uint8 and b.vertex.dtype["density"] == np.float64
    np.testing.assert_array_equal(b.vertex["red"], cols["red"])
    np.testing.assert_allclose(b.vertex["density"], cols["density"], rtol=1e-7)  # float32 in Blender
    assert list(b.elements) == ["vertex"]


def test_export_bakes_the_object_transform(sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path) -> None:
    src = _sharp_ply(tmp_path / "scene.ply")
    obj = _import(src)
    obj.matrix_world = (
        Matrix.Translation((0.5, 2.0, -1.0)) @ Euler((0.2, -0.4, 1.3)).to_matrix().to_4x4() @ Matrix.Scale(1.7, 4)
    ) @ obj.matrix_world
    out = tmp_path / "baked.ply"
    assert bpy.ops.sharp.export_ply(filepath=str(out)) == {"FINISHED"}
    baked = ply.read_gaussians(out)
    # Positions: exactly where Blender draws the vertices in world space.
    world = np.array([list(obj.matrix_world @ v.co) for v in obj.data.vertices])
    np.testing.assert_allclose(baked.means, world, atol=1e-5)
    np.testing.assert_allclose(baked.log_scales, ply.read_gaussians(src).log_scales + math.log(1.7), atol=1e-5)
    # Rotations: the world covariance is M Σ Mᵀ of the source covariance.
    src_data = ply.read_gaussians(src)

    def cov(q: np.ndarray, ls: np.ndarray) -> np.ndarray:
        w, x, y, z = q / np.linalg.norm(q)
        R = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
            ]
        )
        S = np.diag(np.exp(ls.astype(np.float64)))
        return R @ S @ S @ R.T

    M = np.array(obj.matrix_world.to_3x3())  # object local (OpenCV axes) -> world
    for i in range(0, 300, 37):
        expected = M @ cov(src_data.quats_wxyz[i], src_data.log_scales[i]) @ M.T
        got = cov(baked.quats_wxyz[i], baked.log_scales[i])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-12)
    # The extrinsic (world -> camera) now maps the baked world points to the source camera frame.
    E = baked.camera.extrinsic if baked.camera is not None else None
    assert E is not None
    cam_pts = (np.c_[baked.means.astype(np.float64), np.ones(len(baked.means))] @ E.T)[:, :3]
    np.testing.assert_allclose(cam_pts, src_data.means, atol=1e-4)


def test_non_uniform_scale_is_refused_with_advice(clean_scene: bpy.types.Scene, tmp_path: Path) -> None:
    obj = _import(_sharp_ply(tmp_path / "s.ply"))
    obj.scale = (1.0, 2.0, 1.0)
    with pytest.raises(RuntimeError, match=r"non-uniform scale.*same value"):
        bpy.ops.sharp.export_ply(filepath=str(tmp_path / "x.ply"))
    assert not (tmp_path / "x.ply").exists()


def test_export_needs_a_splat_object(clean_scene: bpy.types.Scene, tmp_path: Path) -> None:
    mesh = bpy.data.meshes.new("plain")
    obj = bpy.data.objects.new("plain", mesh)
    clean_scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    assert not bpy.ops.sharp.export_ply.poll()
