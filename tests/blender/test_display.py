"""Display: the Geometry Nodes point cloud (radius, threshold, material) and a Cycles render of the photo."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from PIL import Image

from sharp_blender.io import ply

REPO = Path(__file__).resolve().parents[2]


def _fake_sidecar_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fake_sidecar", REPO / "tests" / "fake_sidecar.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _points(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(positions (N, 3) world, radii (N,), material names) of the evaluated point cloud."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for instance in depsgraph.object_instances:
        if instance.object.original == obj and instance.object.type == "POINTCLOUD":
            cloud = instance.object.data
            n = len(cloud.points)
            pos = np.empty(n * 3, np.float32)
            cloud.attributes["position"].data.foreach_get("vector", pos)
            radius = np.empty(n, np.float32)
            cloud.attributes["radius"].data.foreach_get("value", radius)
            return pos.reshape(n, 3), radius, [m.name for m in cloud.materials if m]
    raise AssertionError(f"{obj.name} evaluates to no point cloud")


def _splat_ply(path: Path, rgb: np.ndarray, f: float, depth: float) -> Path:
    fake = _fake_sidecar_module()
    vertex, _ = fake.splats_from_image(rgb, f, depth)
    height, width = rgb.shape[:2]
    ply.write_ply(path, vertex, ply.sharp_metadata(f, (width, height), len(vertex), [0.1, 1.0]))
    return path


def test_points_have_radius_from_scales_and_the_material(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path
) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    path = _splat_ply(tmp_path / "pts.ply", rgb, f=20.0, depth=3.0)
    bpy.ops.sharp.import_ply(filepath=str(path), display="POINTS")
    obj = bpy.data.objects["pts"]
    _, radius, materials = _points(obj)
    assert len(radius) == 4 * 6
    # The drawn point is DISC_COVER (√2) x the shown disc, Point Size x max(scale); the material cuts the disc.
    size = sharp.display.DEFAULT_POINT_SIZE
    assert sharp.display.get_input(obj, sharp.display.POINT_SIZE) == pytest.approx(size)
    np.testing.assert_allclose(radius, math.sqrt(2) * size * math.sqrt(2) * 3.0 / 20.0, rtol=1e-5)
    assert materials == [sharp.display.MATERIAL_NAME]
    sharp.display.set_input(obj, sharp.display.POINT_SIZE, 0.5)
    np.testing.assert_allclose(_points(obj)[1], math.sqrt(2) * 0.5 * math.sqrt(2) * 3.0 / 20.0, rtol=1e-5)
    material = bpy.data.materials[sharp.display.MATERIAL_NAME]
    if hasattr(material, "surface_render_method"):
        assert material.surface_render_method == "DITHERED"
    nodes = {n.bl_idname for n in material.node_tree.nodes}
    assert {"ShaderNodeAttribute", "ShaderNodeEmission", "ShaderNodeBsdfTransparent"} <= nodes


def test_opacity_threshold_hides_faint_splats(sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path) -> None:
    n = 100
    opacity = np.linspace(-6, 6, n).astype(np.float32)  # alpha from 0.0025 to 0.9975
    cols = {name: np.zeros(n, np.float32) for name in ply.SHARP_VERTEX_PROPERTIES}
    cols.update(z=np.full(n, 2.0, np.float32), opacity=opacity, rot_0=np.ones(n, np.float32))
    path = tmp_path / "faint.ply"
    ply.write_ply(path, ply.structured(cols))
    bpy.ops.sharp.import_ply(filepath=str(path), display="POINTS")
    obj = bpy.data.objects["faint"]
    alpha = 1 / (1 + np.exp(-opacity.astype(np.float64)))
    for threshold in (0.0, 0.5, 0.9):
        sharp.display.set_input(obj, sharp.display.OPACITY_THRESHOLD, threshold)
        assert len(_points(obj)[1]) == int((alpha >= threshold).sum())
        assert sharp.display.get_input(obj, sharp.display.OPACITY_THRESHOLD) == pytest.approx(threshold)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def test_cycles_render_through_the_camera_reproduces_the_photo(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    tmp_path: Path,
    reference_images: dict[str, Path],
    record_property: Callable[[str, object], None],
) -> None:
    """One opaque splat per 2x2 block (Point Size 1), 4 m away, radius sqrt(2)·depth/f (it covers its block).

    Each pixel is inside one block, and the nearest sphere centre wins the depth test, so a perfect
    renderer shows the 2x2 block-mean image. Its PSNR against the photo is the ceiling: the render
    must come within 1 dB of it, and match the block image itself at >= 35 dB (8-bit rounding,
    16 AA samples at block edges).
    """
    width, height = 96, 64
    with Image.open(reference_images["photo_exif"]) as image:
        photo = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS))
    photo_path = tmp_path / "photo.png"
    Image.fromarray(photo).save(photo_path)
    f = 1.1 * width
    path = _splat_ply(tmp_path / "render.ply", photo, f=f, depth=4.0)
    assert bpy.ops.sharp.import_ply(filepath=str(path), display="POINTS") == {"FINISHED"}
    sharp.display.set_input(bpy.data.objects["render"], sharp.display.POINT_SIZE, 1.0)

    scene = clean_scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False
    scene.cycles.filter_width = 0.01  # box-like pixel filter: no blur across block edges
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.dither_intensity = 0.0
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_depth = "8"
    scene.render.filepath = str(tmp_path / "render.png")
    assert (scene.render.resolution_x, scene.render.resolution_y) == (width, height)
    bpy.ops.render.render(write_still=True)
    with Image.open(tmp_path / "render.png") as image:
        rendered = np.asarray(image.convert("RGB"))

    blocks = photo.reshape(height // 2, 2, width // 2, 2, 3).astype(np.float64).mean(axis=(1, 3))
    block_image = np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)
    ceiling = _psnr(block_image, photo)
    psnr_photo = _psnr(rendered, photo)
    psnr_blocks = _psnr(rendered, block_image)
    record_property("psnr_vs_photo_db", round(psnr_photo, 2))
    record_property("psnr_vs_block_image_db", round(psnr_blocks, 2))
    print(f"Cycles render PSNR: {psnr_photo:.2f} dB vs photo (ceiling {ceiling:.2f}), {psnr_blocks:.2f} dB vs blocks")
    assert psnr_blocks >= 35.0
    assert psnr_photo >= ceiling - 1.0
