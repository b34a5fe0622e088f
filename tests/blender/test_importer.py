"""Import: every PLY property kept exactly, derived attributes, placement through the created camera."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from sharp_blender.io import conventions, ply


def _attr(mesh: bpy.types.Mesh, name: str, width: int = 1, key: str = "value", dtype: type = np.float32) -> np.ndarray:
    attribute = mesh.attributes[name]
    out = np.empty(len(mesh.vertices) * width, dtype=dtype)
    attribute.data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


def _random_gaussians(n: int, seed: int = 0, extra: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 8.0, n)
    u, v = rng.uniform(0, 64, n), rng.uniform(0, 48, n)
    cols: dict[str, np.ndarray] = {
        "x": (u - 30) * depth / 50,
        "y": (v - 25) * depth / 50,
        "z": depth,
        **{f"f_dc_{i}": rng.normal(0, 1.5, n) for i in range(3)},
        "opacity": rng.normal(0, 3, n),
        **{f"scale_{i}": rng.normal(-4, 1, n) for i in range(3)},
        **{f"rot_{i}": rng.normal(0, 1, n) for i in range(4)},
    }
    out = {k: v.astype(np.float32) for k, v in cols.items()}
    if extra:
        out.update({f"f_rest_{i}": rng.normal(0, 0.1, n).astype(np.float32) for i in range(9)})
        out["nx"] = np.zeros(n, np.float32)
        out["label"] = rng.integers(0, 255, n).astype(np.uint8)
    return out


def _write(
    path: Path, cols: dict[str, np.ndarray], K: np.ndarray | None = None, size: tuple[int, int] = (64, 48)
) -> Path:
    extras = []
    if K is not None:
        extras = ply.sharp_metadata(float(K[0, 0]), size, len(cols["x"]), [0.1, 1.0])
        extras[1] = ply.metadata_element("intrinsic", K.ravel(), "f4")
    ply.write_ply(path, ply.structured(cols), extras)
    return path


def test_every_property_is_kept_exactly_and_display_attributes_are_derived(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path
) -> None:
    cols = _random_gaussians(500, extra=True)
    K = np.array([[50.0, 0, 30], [0, 50.0, 25], [0, 0, 1]])
    path = _write(tmp_path / "exact.ply", cols, K)
    assert bpy.ops.sharp.import_ply(filepath=str(path), display="POINTS") == {"FINISHED"}
    obj = bpy.data.objects["exact"]
    mesh = obj.data
    assert len(mesh.vertices) == 500
    assert bpy.context.view_layer.objects.active == obj and obj.select_get()
    for name, values in cols.items():
        if values.dtype == np.uint8:
            np.testing.assert_array_equal(_attr(mesh, name, dtype=np.int32), values.astype(np.int32))
            assert mesh.attributes[name].data_type == "INT"
        else:
            np.testing.assert_array_equal(_attr(mesh, name), values, err_msg=name)
            assert mesh.attributes[name].data_type == "FLOAT"
    origin = np.array(mesh[sharp.importer.PROP_ORIGIN])
    xyz = np.stack([cols["x"], cols["y"], cols["z"]], axis=1)
    np.testing.assert_allclose(origin, np.median(xyz, axis=0), rtol=1e-6)
    np.testing.assert_array_equal(_attr(mesh, "position", 3, "vector"), xyz - origin.astype(np.float32))

    f_dc = np.stack([cols[f"f_dc_{i}"] for i in range(3)], axis=1)
    rgb = conventions.srgb_to_linear(np.clip(f_dc * conventions.SH_C0 + 0.5, 0, 1))
    col = _attr(mesh, "Col", 4, "color")
    assert mesh.attributes["Col"].data_type == "FLOAT_COLOR"
    np.testing.assert_allclose(col[:, :3], rgb, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(col[:, 3], 1 / (1 + np.exp(-cols["opacity"].astype(np.float64))), rtol=1e-5, atol=1e-7)
    log_scales = np.stack([cols[f"scale_{i}"] for i in range(3)], axis=1)
    np.testing.assert_allclose(_attr(mesh, "scale", 3, "vector"), np.exp(log_scales.astype(np.float64)), rtol=1e-6)
    quats = np.stack([cols[f"rot_{i}"] for i in range(4)], axis=1).astype(np.float64)
    rot = _attr(mesh, "rotation", 4, "value")
    assert mesh.attributes["rotation"].data_type == "QUATERNION"
    np.testing.assert_allclose(rot, quats / np.linalg.norm(quats, axis=1, keepdims=True), atol=1e-6)


def test_plain_ply_without_metadata_imports_without_camera(clean_scene: bpy.types.Scene, tmp_path: Path) -> None:
    path = _write(tmp_path / "plain.ply", _random_gaussians(50))
    assert bpy.ops.sharp.import_ply(filepath=str(path), display="POINTS") == {"FINISHED"}
    assert len(bpy.data.objects["plain"].data.vertices) == 50
    assert not bpy.data.cameras


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a ply at all", "not a PLY file"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n", "not supported"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n\0\0\0\0", "missing"),
        (
            b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\nend_header\n\0\0",
            "truncated",
        ),
    ],
)
def test_malformed_ply_is_a_clear_error_and_creates_nothing(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.sharp.import_ply(filepath=str(path), display="POINTS")
    assert not bpy.data.objects and not bpy.data.meshes and not bpy.data.cameras


def _project(
    scene: bpy.types.Scene, cam: bpy.types.Object, obj: bpy.types.Object, mesh_positions: np.ndarray
) -> np.ndarray:
    width, height = scene.render.resolution_x, scene.render.resolution_y
    out = []
    for p in mesh_positions:  # a few dozen test points: mathutils is the reference here
        ndc = world_to_camera_view(scene, cam, obj.matrix_world @ Vector(p.tolist()))
        out.append((ndc.x * width, (1.0 - ndc.y) * height))
    return np.array(out)


@pytest.mark.parametrize(
    "K, size, placement",
    [
        (np.array([[55.0, 0, 32], [0, 55.0, 24], [0, 0, 1]]), (64, 48), "ORIGIN"),  # SHARP: centred, square pixels
        (np.array([[70.0, 0, 20], [0, 70.0, 40], [0, 0, 1]]), (48, 64), "CURSOR"),  # portrait, off-centre
        (np.array([[80.0, 0, 30], [0, 60.0, 26], [0, 0, 1]]), (64, 48), "ORIGIN"),  # fx > fy: pixel aspect
    ],
)
def test_splat_means_land_on_their_source_pixels(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    tmp_path: Path,
    K: np.ndarray,
    size: tuple[int, int],
    placement: str,
) -> None:
    rng = np.random.default_rng(5)
    n = 40
    u, v = rng.uniform(0, size[0], n), rng.uniform(0, size[1], n)
    depth = rng.uniform(0.4, 30.0, n)
    cols = _random_gaussians(n)
    cols["x"] = ((u - K[0, 2]) * depth / K[0, 0]).astype(np.float32)
    cols["y"] = ((v - K[1, 2]) * depth / K[1, 1]).astype(np.float32)
    cols["z"] = depth.astype(np.float32)
    path = _write(tmp_path / "proj.ply", cols, K, size)
    clean_scene.cursor.location = (1.5, -2.0, 0.7)
    clean_scene.cursor.rotation_euler = (0.3, -0.2, 1.1)
    assert bpy.ops.sharp.import_ply(filepath=str(path), placement=placement, display="POINTS") == {"FINISHED"}
    obj, cam = bpy.data.objects["proj"], bpy.data.objects["proj Camera"]
    assert clean_scene.camera == cam and cam.data.clip_start <= 0.01
    mesh_positions = _attr(obj.data, "position", 3, "vector").astype(np.float64)
    # float32 positions: compare with the float32 means the file holds.
    x, y, z = (cols[a].astype(np.float64) for a in "xyz")
    expected = np.stack([K[0, 0] * x / z + K[0, 2], K[1, 1] * y / z + K[1, 2]], axis=1)
    pixels = _project(clean_scene, cam, obj, mesh_positions)
    assert np.abs(pixels - expected).max() < 0.01
    if placement == "ORIGIN":
        # Camera at the origin looking along +Y, up +Z; the object's origin at the scene centre.
        assert cam.matrix_world.translation.length < 1e-9
        assert (cam.matrix_world.to_3x3() @ Vector((0, 0, -1)) - Vector((0, 1, 0))).length < 1e-6
        origin = np.array(obj.data[sharp.importer.PROP_ORIGIN])
        np.testing.assert_allclose(
            np.array(obj.matrix_world.translation), [origin[0], origin[2], -origin[1]], atol=1e-6
        )
    else:
        assert (cam.matrix_world.translation - clean_scene.cursor.location).length < 1e-6


def test_metric_scale_is_kept(clean_scene: bpy.types.Scene, tmp_path: Path) -> None:
    cols = _random_gaussians(2)
    cols["x"][:] = (0.0, 1.0)
    cols["y"][:] = (0.0, 0.0)
    cols["z"][:] = (2.0, 2.0)
    path = _write(tmp_path / "metric.ply", cols)
    bpy.ops.sharp.import_ply(filepath=str(path), display="POINTS")
    obj = bpy.data.objects["metric"]
    a, b = (obj.matrix_world @ v.co for v in obj.data.vertices)
    assert math.isclose((a - b).length, 1.0, rel_tol=1e-6)  # 1 Blender unit = 1 m


def test_compressed_ply_imports_as_splats(sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path) -> None:
    from tests.pure.test_compressed_ply import encode, gaussians

    g = gaussians(300, rest=9)
    path = tmp_path / "scene.compressed.ply"
    path.write_bytes(encode(g, colour_bounds=True, sh_props=9))
    assert bpy.ops.sharp.import_ply(filepath=str(path)) == {"FINISHED"}
    obj = bpy.data.objects["scene.compressed"]
    data = obj.data
    assert sharp.importer.splat_count(obj) == 300
    # The SH bands are decoded: as f_rest_* (points display) or radiance:sh_* (native splats hold them there).
    assert ("radiance:sh_2" if obj.type == "POINTCLOUD" else "f_rest_8") in data.attributes
    assert "packed_position" not in data.attributes
    local = np.empty(300 * 3, np.float32)
    data.attributes["position"].data.foreach_get("vector", local)
    matrix = np.array(obj.matrix_world)
    world = local.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
    # (x, y, z) in the file -> (x, z, -y) in Blender, within the 11/10/11-bit quantisation
    np.testing.assert_allclose(world, g["means"][:, [0, 2, 1]] * [1, 1, -1], atol=6 / 1023)
    # The preview hands the sidecar a plain PLY, not the compressed source.
    import importlib

    preview = importlib.import_module(f"{sharp.__name__}.preview")
    plain = preview.source_ply(obj, tmp_path)
    assert plain != path and ply.read_gaussians(plain).count == 300
