"""Native Gaussian splats (Blender >= 5.3): import, attributes, Blender's own SH layout, Display switch,
render set-up. On a Blender without them (5.0.1) the import must still make today's mesh display.

Native-only tests are conditioned on the feature (``PointCloud.type`` offers ``GAUSSIAN_SPLAT``), so
under bpy 5.3.0 they run and under bpy 5.0.1 they do not apply.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest

from sharp_blender import native_cloud
from sharp_blender.io import ply

NATIVE = native_cloud.supported()  # the add-on's own feature test (PointCloud.type offers GAUSSIAN_SPLAT)
native_only = pytest.mark.skipif(not NATIVE, reason="this Blender has no native Gaussian splats (5.3+)")


def _attr(data: bpy.types.ID, name: str, width: int = 1, key: str = "value") -> np.ndarray:
    count = len(data.points) if hasattr(data, "points") else len(data.vertices)
    out = np.empty(count * width, dtype=np.float32)
    data.attributes[name].data.foreach_get(key, out)
    return out.reshape(count, width) if width > 1 else out


def _write(path: Path, n: int = 200, rest: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(1.0, 5.0, n)
    cols = {
        "x": rng.uniform(-1, 1, n) * depth,
        "y": rng.uniform(-0.7, 0.7, n) * depth,
        "z": depth,
        **{f"f_dc_{i}": rng.normal(0, 1, n) for i in range(3)},
        "opacity": rng.normal(0, 2, n),
        **{f"scale_{i}": rng.normal(-4, 0.5, n) for i in range(3)},
        **{f"rot_{i}": rng.normal(0, 1, n) for i in range(4)},
        **{f"f_rest_{i}": rng.normal(0, 0.2, n) for i in range(rest)},
    }
    cols = {k: v.astype(np.float32) for k, v in cols.items()}
    ply.write_ply(path, ply.structured(cols), ply.sharp_metadata(60.0, (64, 48), n, [0.2, 1.0]))
    return cols


def test_import_makes_gaussians_where_supported_else_points(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path
) -> None:
    _write(tmp_path / "auto.ply")
    assert bpy.ops.sharp.import_ply(filepath=str(tmp_path / "auto.ply")) == {"FINISHED"}
    obj = bpy.data.objects["auto"]
    assert sharp.native_cloud.supported() == NATIVE
    if NATIVE:
        assert obj.type == "POINTCLOUD" and obj.data.type == "GAUSSIAN_SPLAT"
        assert not obj.modifiers
    else:
        assert obj.type == "MESH" and sharp.display.modifier(obj) is not None
    assert sharp.native_cloud.display_of(obj) == ("GAUSSIANS" if NATIVE else "POINTS")
    assert sharp.importer.splat_count(obj) == 200


@native_only
def test_native_attributes_placement_and_camera_match_the_points_import(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path
) -> None:
    cols = _write(tmp_path / "scene.ply", rest=9)
    assert bpy.ops.sharp.import_ply(filepath=str(tmp_path / "scene.ply"), display="POINTS") == {"FINISHED"}
    points = bpy.data.objects["scene"]
    points.name = "points"
    assert bpy.ops.sharp.import_ply(filepath=str(tmp_path / "scene.ply")) == {"FINISHED"}
    native = bpy.data.objects["scene"]
    cloud = native.data
    assert native.type == "POINTCLOUD" and cloud.type == "GAUSSIAN_SPLAT" and len(cloud.points) == 200
    np.testing.assert_allclose(np.array(native.matrix_world), np.array(points.matrix_world), atol=1e-12)
    cam = bpy.data.objects[native[sharp.importer.PROP_CAMERA]]
    assert cam.type == "CAMERA" and bpy.context.scene.camera == cam
    origin = np.array(cloud[sharp.importer.PROP_ORIGIN])
    xyz = np.stack([cols[a] for a in "xyz"], axis=1)
    np.testing.assert_allclose(_attr(cloud, "position", 3, "vector"), xyz - origin, atol=1e-5)
    # The PLY properties the native attributes do not hold exactly are kept under their own names.
    stored = {"opacity", *(f"scale_{i}" for i in range(3)), *(f"rot_{i}" for i in range(4))}
    for name in cols:
        assert (name in cloud.attributes) == (name in stored), name
    for name in stored:
        np.testing.assert_array_equal(_attr(cloud, name), cols[name], err_msg=name)
    log_scales = np.stack([cols[f"scale_{i}"] for i in range(3)], axis=1)
    np.testing.assert_allclose(_attr(cloud, "scale", 3, "vector"), np.exp(log_scales), rtol=1e-6)
    base = _attr(cloud, "radiance:base", 4, "vector")
    np.testing.assert_array_equal(base[:, :3], np.stack([cols[f"f_dc_{i}"] for i in range(3)], axis=1))
    np.testing.assert_allclose(base[:, 3], 1 / (1 + np.exp(-cols["opacity"].astype(np.float64))), rtol=1e-5)
    for k in range(3):
        band = _attr(cloud, f"radiance:sh_{k}", 3, "vector")
        np.testing.assert_array_equal(band, np.stack([cols[f"f_rest_{c * 3 + k}"] for c in range(3)], axis=1))


@native_only
def test_gaussian_attributes_equal_blenders_own_ply_import(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path
) -> None:
    """Same file through wm.ply_import (Blender's reader of 3DGS PLYs) and through the add-on."""
    _write(tmp_path / "theirs.ply", n=50, rest=45, seed=2)
    assert bpy.ops.wm.ply_import(filepath=str(tmp_path / "theirs.ply")) == {"FINISHED"}
    theirs = bpy.context.selected_objects[0].data
    assert bpy.ops.sharp.import_ply(filepath=str(tmp_path / "theirs.ply"), camera=False) == {"FINISHED"}
    ours = bpy.context.active_object.data
    assert ours.type == theirs.type == "GAUSSIAN_SPLAT"
    expected = {"scale": (3, "vector"), "rotation": (4, "value"), "radiance:base": (4, "vector")}
    expected.update({f"radiance:sh_{k}": (3, "vector") for k in range(15)})
    for name, (width, key) in expected.items():
        assert ours.attributes[name].data_type == theirs.attributes[name].data_type, name
        np.testing.assert_allclose(_attr(ours, name, width, key), _attr(theirs, name, width, key), atol=1e-6)
    assert "radiance:sh_15" not in ours.attributes


@native_only
def test_display_switch_keeps_the_object_and_every_property(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path
) -> None:
    cols = _write(tmp_path / "switch.ply", rest=9)
    bpy.ops.sharp.import_ply(filepath=str(tmp_path / "switch.ply"))
    obj = bpy.data.objects["switch"]
    matrix = np.array(obj.matrix_world)
    base = _attr(obj.data, "radiance:base", 4, "vector")
    assert bpy.ops.sharp.set_display(mode="POINTS") == {"FINISHED"}
    assert obj.type == "MESH" and sharp.display.modifier(obj) is not None
    assert bpy.data.objects["switch"] == obj and sharp.native_cloud.display_of(obj) == "POINTS"
    assert sharp.importer.PROP_KINDS in obj.data and "Col" in obj.data.attributes
    # radiance:base is gone with the Gaussians: the f_dc it held are stored under their own names.
    for i in range(3):
        np.testing.assert_array_equal(_attr(obj.data, f"f_dc_{i}"), cols[f"f_dc_{i}"])
    _assert_exports(sharp, obj, cols, tmp_path / "points.ply")
    assert bpy.ops.sharp.set_display(mode="GAUSSIANS") == {"FINISHED"}
    assert obj.type == "POINTCLOUD" and obj.data.type == "GAUSSIAN_SPLAT" and not obj.modifiers
    assert "Col" not in obj.data.attributes and sharp.importer.PROP_ORIGIN in obj.data
    np.testing.assert_array_equal(_attr(obj.data, "radiance:base", 4, "vector"), base)
    for k in range(3):
        band = _attr(obj.data, f"radiance:sh_{k}", 3, "vector")
        np.testing.assert_array_equal(band, np.stack([cols[f"f_rest_{c * 3 + k}"] for c in range(3)], axis=1))
    np.testing.assert_array_equal(np.array(obj.matrix_world), matrix)
    _assert_exports(sharp, obj, cols, tmp_path / "gaussians.ply")


def _assert_exports(sharp: ModuleType, obj: bpy.types.Object, cols: dict[str, np.ndarray], path: Path) -> None:
    """Untouched export writes every property back: exactly, and positions within 1e-6 m."""
    sharp.exporter.export_ply(obj, path, apply_transform=False)
    back = ply.read_ply(path).vertex
    assert list(back.dtype.names) == list(cols)
    for name, values in cols.items():
        if name in "xyz":
            np.testing.assert_allclose(back[name], values, rtol=0, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(back[name], values, err_msg=name)


def test_render_setup_operator(sharp: ModuleType, clean_scene: bpy.types.Scene) -> None:
    scene = clean_scene
    scene.view_settings.view_transform = "AgX"
    scene.render.filter_size = 1.5  # not the set-up's value, so the check below can fail
    assert bpy.ops.sharp.render_setup() == {"FINISHED"}
    settings = sharp.render_setup.DEFAULT
    assert scene.view_settings.view_transform == "Standard" and scene.view_settings.look == "None"
    assert scene.eevee.taa_render_samples == settings.eevee_samples
    assert scene.render.filter_size == pytest.approx(settings.eevee_filter_size)
    assert scene.cycles.samples == settings.cycles_samples
    assert scene.cycles.use_denoising == settings.cycles_denoise
    assert scene.cycles.filter_width == pytest.approx(settings.cycles_filter_width)


def test_generate_applies_the_render_setup_only_to_an_empty_scene(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    fake_sidecar: Callable[..., None],
    make_photo: Callable[..., Path],
    tmp_path: Path,
) -> None:
    photo = make_photo(tmp_path / "photo.png")
    scene = clean_scene
    scene.view_settings.view_transform = "AgX"
    assert bpy.ops.sharp.predict(filepath=str(photo)) == {"FINISHED"}
    assert scene.view_settings.view_transform == "Standard"
    made = [o for o in scene.objects if sharp.importer.is_splat_object(o)]
    assert len(made) == 1
    assert sharp.native_cloud.display_of(made[0]) == ("GAUSSIANS" if NATIVE else "POINTS")
    cam = bpy.data.objects[made[0][sharp.importer.PROP_CAMERA]]
    assert cam.data.background_images[0].image.filepath.endswith("photo.png")
    scene.view_settings.view_transform = "AgX"  # the user's choice in a scene with objects stays
    assert bpy.ops.sharp.predict(filepath=str(photo)) == {"FINISHED"}
    assert scene.view_settings.view_transform == "AgX"


@native_only
@pytest.mark.parametrize("mode", ["GAUSSIANS", "POINTS"])
def test_export_writes_the_imported_numbers_back_from_either_display(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path, mode: str
) -> None:
    cols = _write(tmp_path / "round.ply", rest=9)
    assert bpy.ops.sharp.import_ply(filepath=str(tmp_path / "round.ply"), display=mode) == {"FINISHED"}
    obj = bpy.context.active_object
    assert sharp.native_cloud.display_of(obj) == mode
    _assert_exports(sharp, obj, cols, tmp_path / "out.ply")
