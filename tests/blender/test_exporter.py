"""bpy.ops.sharp.export_ply: round trips, baked transforms, refusal of non-uniform scale."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from mathutils import Euler, Matrix

from sharp_blender.io import ply


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
        **{f"f_rest_{i}": rng.normal(0, 0.3, n) for i in range(9)},
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


ORIGIN_FRAME = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)  # (x, z, -y)


def _cov(q: np.ndarray, ls: np.ndarray) -> np.ndarray:
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


def _world_positions(obj: bpy.types.Object) -> np.ndarray:
    local = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.attributes["position"].data.foreach_get("vector", local)
    M = np.array(obj.matrix_world)
    return local.reshape(-1, 3).astype(np.float64) @ M[:3, :3].T + M[:3, 3]


@pytest.mark.parametrize("placement", ["ORIGIN", "CURSOR"])
def test_untouched_import_exports_the_numbers_it_read(
    clean_scene: bpy.types.Scene, tmp_path: Path, placement: str
) -> None:
    src = _sharp_ply(tmp_path / "src.ply")
    clean_scene.cursor.location = (1.5, -2.0, 0.7)
    clean_scene.cursor.rotation_euler = (0.3, -0.2, 1.1)
    assert bpy.ops.sharp.import_ply(filepath=str(src), placement=placement) == {"FINISHED"}
    out = tmp_path / "out.ply"
    assert bpy.ops.sharp.export_ply(filepath=str(out)) == {"FINISHED"}  # default: Apply Transform
    a, b = ply.read_ply(src), ply.read_ply(out)
    assert a.vertex.dtype == b.vertex.dtype
    for name in a.vertex.dtype.names:
        np.testing.assert_allclose(b.vertex[name], a.vertex[name], rtol=0, atol=1e-6, err_msg=name)
    assert list(a.elements) == list(b.elements)
    for name in a.elements:
        if name != "vertex":  # the extrinsic goes through float32 object matrices: equal to 1e-6
            np.testing.assert_allclose(b.scalar_element(name), a.scalar_element(name), atol=1e-6, err_msg=name)


MOVE = Matrix.Translation((0.5, 2.0, -1.0)) @ Euler((0.2, -0.4, 1.3)).to_matrix().to_4x4() @ Matrix.Scale(1.7, 4)


def test_export_bakes_the_move_in_the_plys_axes(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path
) -> None:
    src = _sharp_ply(tmp_path / "scene.ply")
    obj = _import(src)
    obj.matrix_world = MOVE @ obj.matrix_world
    out = tmp_path / "baked.ply"
    assert bpy.ops.sharp.export_ply(filepath=str(out)) == {"FINISHED"}
    baked, src_data = ply.read_gaussians(out), ply.read_gaussians(src)
    # The world move, expressed in the PLY's axes: ORIGIN_FRAME⁻¹ · MOVE · ORIGIN_FRAME.
    change = np.linalg.inv(ORIGIN_FRAME) @ np.array(MOVE) @ ORIGIN_FRAME
    expected = src_data.means.astype(np.float64) @ change[:3, :3].T + change[:3, 3]
    np.testing.assert_allclose(baked.means, expected, atol=1e-5)
    np.testing.assert_allclose(baked.means, _world_positions(obj) @ ORIGIN_FRAME[:3, :3], atol=1e-5)
    np.testing.assert_allclose(baked.log_scales, src_data.log_scales + math.log(1.7), atol=1e-5)
    A = change[:3, :3]
    for i in range(0, 300, 37):
        want = A @ _cov(src_data.quats_wxyz[i], src_data.log_scales[i]) @ A.T
        np.testing.assert_allclose(_cov(baked.quats_wxyz[i], baked.log_scales[i]), want, rtol=1e-4, atol=1e-12)
    # SH bands turn by the same rotation (sh_rotation itself is checked in tests/pure).
    a, b = ply.read_ply(src).vertex, ply.read_ply(out).vertex
    rest = np.stack([a[f"f_rest_{i}"] for i in range(9)], axis=1)
    turned = sharp.sh_rotation.rotate_f_rest(rest, A / 1.7)
    np.testing.assert_allclose(np.stack([b[f"f_rest_{i}"] for i in range(9)], axis=1), turned, atol=1e-5)
    assert np.abs(turned - rest).max() > 0.05  # the rotation really changed them
    # The extrinsic (world -> camera, rigid) moved with the splats: the photo still lines up.
    E = baked.camera.extrinsic if baked.camera is not None else None
    assert E is not None
    np.testing.assert_allclose(E[:3, :3] @ E[:3, :3].T, np.eye(3), atol=1e-5)
    cam_pts = (np.c_[baked.means.astype(np.float64), np.ones(len(baked.means))] @ E.T)[:, :3]
    np.testing.assert_allclose(cam_pts, 1.7 * src_data.means, atol=1e-4)


@pytest.mark.parametrize("moved", [False, True])
def test_import_export_import_lands_in_the_same_place(
    clean_scene: bpy.types.Scene, tmp_path: Path, moved: bool
) -> None:
    first = _import(_sharp_ply(tmp_path / "first.ply"))
    if moved:
        first.matrix_world = MOVE @ first.matrix_world
    camera = bpy.data.objects["first Camera"]
    assert bpy.ops.sharp.export_ply(filepath=str(tmp_path / "second.ply")) == {"FINISHED"}
    second = _import(tmp_path / "second.ply")
    np.testing.assert_allclose(_world_positions(second), _world_positions(first), atol=1e-5)
    # The new camera sits where the old one sees the moved splats from (it moved with them).
    want = (MOVE if moved else Matrix()) @ camera.matrix_world
    got = bpy.data.objects["second Camera"].matrix_world
    np.testing.assert_allclose(np.array(got.translation), np.array(want.translation), atol=1e-5)
    np.testing.assert_allclose(np.array(got.to_3x3()), np.array(want.to_3x3().normalized()), atol=1e-5)
    # and a third generation stays put too
    assert bpy.ops.sharp.export_ply(filepath=str(tmp_path / "third.ply")) == {"FINISHED"}
    third = _import(tmp_path / "third.ply")
    np.testing.assert_allclose(_world_positions(third), _world_positions(first), atol=1e-5)


@pytest.mark.parametrize("legacy", [False, True])
def test_import_honours_the_extrinsic(clean_scene: bpy.types.Scene, tmp_path: Path, legacy: bool) -> None:
    """A file whose world is not its camera: the splats stay where the file says, the camera sees them."""
    n = 30
    rng = np.random.default_rng(8)
    E = np.eye(4)
    E[:3, :3] = np.array(Euler((0.4, -0.3, 2.0)).to_matrix())
    E[:3, 3] = (0.3, -1.2, 2.5)
    u, v, depth = rng.uniform(0, 64, n), rng.uniform(0, 48, n), rng.uniform(1, 6, n)
    cam_pts = np.stack([(u - 32) * depth / 60, (v - 24) * depth / 60, depth], axis=1)
    world = (cam_pts - E[:3, 3]) @ E[:3, :3]  # E⁻¹ applied to camera points
    cols = {name: rng.normal(size=n).astype(np.float32) for name in ply.SHARP_VERTEX_PROPERTIES}
    cols.update(x=world[:, 0].astype(np.float32), y=world[:, 1].astype(np.float32), z=world[:, 2].astype(np.float32))
    extras = ply.sharp_metadata(60.0, (64, 48), n, [0.1, 1.0])
    stored = np.concatenate([E[:3, :3].T, E[:3, 3:]], axis=1) if legacy else E  # legacy: 3x4, 3x3 transposed
    extras[0] = ply.metadata_element("extrinsic", stored.ravel(), "f4")
    path = tmp_path / "posed.ply"
    ply.write_ply(path, ply.structured(cols), extras)
    obj = _import(path)
    np.testing.assert_allclose(_world_positions(obj), world @ ORIGIN_FRAME[:3, :3].T, atol=1e-5)
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    cam = bpy.data.objects["posed Camera"]
    pixels = []
    for p in _world_positions(obj):
        ndc = world_to_camera_view(clean_scene, cam, Vector(p.tolist()))
        pixels.append((ndc.x * 64, (1 - ndc.y) * 48))
    np.testing.assert_allclose(np.array(pixels), np.stack([u, v], axis=1), atol=1e-3)
    out = tmp_path / "posed_out.ply"
    assert bpy.ops.sharp.export_ply(filepath=str(out)) == {"FINISHED"}
    back = ply.read_gaussians(out)
    np.testing.assert_allclose(back.means, world, atol=1e-5)
    assert back.camera is not None
    np.testing.assert_allclose(back.camera.extrinsic, E, atol=1e-6)
    assert len(ply.read_ply(out).scalar_element("extrinsic")) == len(stored.ravel())
    obj.matrix_world = MOVE @ obj.matrix_world
    assert bpy.ops.sharp.export_ply(filepath=str(out)) == {"FINISHED"}
    moved = ply.read_gaussians(out)
    assert moved.camera is not None
    seen = np.c_[moved.means.astype(np.float64), np.ones(n)] @ moved.camera.extrinsic.T
    np.testing.assert_allclose(seen[:, :3], 1.7 * cam_pts, atol=1e-4)  # the camera moved with the splats


def test_plain_export_is_the_standard_vertex_layout(clean_scene: bpy.types.Scene, tmp_path: Path) -> None:
    from plyfile import PlyData

    src = _sharp_ply(tmp_path / "src.ply")
    cols = {name: ply.read_ply(src).vertex[name] for name in ply.read_ply(src).vertex.dtype.names}
    cols["label"] = np.arange(len(cols["x"]), dtype=np.uint8)  # a non-standard property plain export drops
    ply.write_ply(src, ply.structured(cols), ply.sharp_metadata(700.0, (640, 480), len(cols["x"]), [0.2, 1.5]))
    _import(src)
    out = tmp_path / "plain.ply"
    assert bpy.ops.sharp.export_ply(filepath=str(out), plain=True) == {"FINISHED"}
    data = PlyData.read(str(out))
    assert [e.name for e in data.elements] == ["vertex"]
    names = [p.name for p in data["vertex"].properties]
    standard = list(ply.SHARP_VERTEX_PROPERTIES)
    assert names == [*standard[:6], *(f"f_rest_{i}" for i in range(9)), *standard[6:]]
    assert all(data["vertex"][n].dtype == np.float32 for n in names)
    for n in names:
        np.testing.assert_allclose(data["vertex"][n], cols[n], atol=1e-6, err_msg=n)


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


def _has_native_splats() -> bool:
    prop = bpy.types.PointCloud.bl_rna.properties.get("type")
    return prop is not None and "GAUSSIAN_SPLAT" in {e.identifier for e in prop.enum_items}


native_splats = pytest.mark.skipif(not _has_native_splats(), reason="needs Blender >= 5.3 (GAUSSIAN_SPLAT clouds)")


def _set_point(cloud: bpy.types.PointCloud, name: str, kind: str, key: str, values: np.ndarray) -> None:
    attribute = cloud.attributes.get(name) or cloud.attributes.new(name, kind, "POINT")
    attribute.data.foreach_set(key, np.ascontiguousarray(values, dtype=np.float32).ravel())


@native_splats
def test_a_point_cloud_with_ply_attributes_exports(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path
) -> None:
    """A GAUSSIAN_SPLAT cloud carrying every PLY property (as the 5.3 import makes it) exports like the mesh."""
    src = _sharp_ply(tmp_path / "cloud.ply", n=200)
    contents = ply.read_ply(src)
    vertex = contents.vertex
    n = len(vertex)
    means = np.stack([vertex[a] for a in "xyz"], axis=1).astype(np.float64)
    origin = means.mean(axis=0)
    cloud = bpy.data.pointclouds.new("cloud")
    cloud.resize(n)
    cloud.type = "GAUSSIAN_SPLAT"
    _set_point(cloud, "position", "FLOAT_VECTOR", "vector", means - origin)
    for name in vertex.dtype.names:
        _set_point(cloud, name, "FLOAT", "value", vertex[name])
    _set_point(cloud, "scale", "FLOAT_VECTOR", "vector", np.exp(np.stack([vertex[f"scale_{i}"] for i in range(3)], 1)))
    cloud[sharp.importer.PROP_KINDS] = json.dumps(dict.fromkeys(vertex.dtype.names, "f4"))
    cloud[sharp.importer.PROP_ORIGIN] = list(map(float, origin))
    cloud[sharp.importer.PROP_FRAME] = list(map(float, ORIGIN_FRAME.ravel()))
    obj = bpy.data.objects.new("cloud", cloud)
    clean_scene.collection.objects.link(obj)
    obj.matrix_world = Matrix(ORIGIN_FRAME.tolist()) @ Matrix.Translation(origin.tolist())
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.sharp.export_ply.poll()
    out = tmp_path / "cloud_out.ply"
    assert bpy.ops.sharp.export_ply(filepath=str(out)) == {"FINISHED"}
    back = ply.read_ply(out).vertex
    assert len(back) == n
    for name in vertex.dtype.names:
        np.testing.assert_allclose(back[name], vertex[name], atol=1e-6, err_msg=name)
    obj.matrix_world = MOVE @ obj.matrix_world
    assert bpy.ops.sharp.export_ply(filepath=str(out)) == {"FINISHED"}
    change = np.linalg.inv(ORIGIN_FRAME) @ np.array(MOVE) @ ORIGIN_FRAME
    moved = ply.read_gaussians(out)
    np.testing.assert_allclose(moved.means, means @ change[:3, :3].T + change[:3, 3], atol=1e-5)


@native_splats
def test_blenders_own_import_exports_the_file_it_read(clean_scene: bpy.types.Scene, tmp_path: Path) -> None:
    """Blender's wm.ply_import keeps only native attributes (and its own PLY export writes 0 points)."""
    src = _sharp_ply(tmp_path / "native.ply", n=120)
    assert bpy.ops.wm.ply_import(filepath=str(src)) == {"FINISHED"}
    obj = bpy.data.objects["native"]
    assert obj.type == "POINTCLOUD" and "f_dc_0" not in obj.data.attributes
    bpy.context.view_layer.objects.active = obj
    out = tmp_path / "native_out.ply"
    assert bpy.ops.sharp.export_ply(filepath=str(out), plain=True) == {"FINISHED"}
    a, b = ply.read_ply(src).vertex, ply.read_ply(out).vertex
    assert len(b) == len(a)
    for name in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", *(f"f_rest_{i}" for i in range(9))):
        np.testing.assert_allclose(b[name], a[name], atol=1e-6, err_msg=name)
    for i in range(3):
        np.testing.assert_allclose(b[f"scale_{i}"], a[f"scale_{i}"], atol=1e-5)
    # Blender keeps sigmoid(opacity) in float32; compare where it is exact.
    np.testing.assert_allclose(1 / (1 + np.exp(-b["opacity"])), 1 / (1 + np.exp(-a["opacity"])), atol=1e-6)
    qa = np.stack([a[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(
        np.stack([b[f"rot_{i}"] for i in range(4)], 1), qa / np.linalg.norm(qa, axis=1)[:, None], atol=1e-6
    )
