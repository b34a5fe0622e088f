"""Add Camera Path, then Render Preview / Preview Frame through the real CPU sidecar (background mode)."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import bpy
import imageio_ffmpeg
import numpy as np
import pytest

from sharp_blender.io import trajectory
from tests.pixel_splats import write_pixel_ply

EXTENSION_MODULE = "bl_ext.user_default.sharp_blender"
WIDTH, HEIGHT, FOCAL = 48, 32, 40.0


def pixel_ply(path: Path, seed: int = 0) -> np.ndarray:
    """A pixel-splat PLY (tests/pixel_splats.py) of a small synthetic image; returns that (H, W, 3) uint8 image."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    image = np.stack([u / WIDTH, v / HEIGHT, 0.5 + 0.5 * np.sin(u / 5 + v / 3)], -1)
    image = (image * 200 + 20).astype(np.uint8)
    write_pixel_ply(path, image, FOCAL, depth_range=(2.0, 4.0), seed=seed)
    return image


@pytest.fixture
def cpu_sidecar(sharp: ModuleType, tmp_path: Path, sidecar_python: str) -> Iterator[Path]:
    """The real sidecar (`python -m sharp_sidecar serve`, torch on CPU); yields the output folder."""
    prefs = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    saved = (prefs.sidecar_command, prefs.output_dir, prefs.device)
    prefs.sidecar_command = shlex.join([sidecar_python, "-m", "sharp_sidecar", "serve"])
    prefs.output_dir = str(tmp_path / "out")
    prefs.device = "cpu"
    yield tmp_path / "out"
    sharp.jobs.shutdown()
    prefs.sidecar_command, prefs.output_dir, prefs.device = saved


def animation_curves(obj: bpy.types.Object) -> list[bpy.types.FCurve]:
    """The object's F-curves from a layered action (Blender 4.4+) or a legacy one."""
    action = obj.animation_data.action
    if hasattr(action, "layers") and action.layers:
        return list(action.layers[0].strips[0].channelbag(obj.animation_data.action_slot).fcurves)
    return list(action.fcurves)


def video_frames(path: str) -> tuple[tuple[int, int], int]:
    reader = imageio_ffmpeg.read_frames(path)
    meta = next(reader)
    return tuple(meta["size"]), sum(1 for _ in reader)  # type: ignore[return-value]


def test_camera_path_then_preview(
    sharp: ModuleType, clean_scene: bpy.types.Scene, cpu_sidecar: Path, tmp_path: Path
) -> None:
    image = pixel_ply(tmp_path / "pixels.ply")
    assert bpy.ops.sharp.import_ply(filepath=str(tmp_path / "pixels.ply"), placement="CURSOR", display="POINTS") == {
        "FINISHED"
    }
    splat = bpy.data.objects["pixels"]
    photo_cam = bpy.data.objects["pixels Camera"]
    scene = clean_scene
    scene.frame_start, scene.frame_end = 3, 14  # 12 frames, not starting at 1
    scene.sharp_preview.trajectory = "rotate"

    assert bpy.ops.sharp.add_camera_path() == {"FINISHED"}
    path_cam = scene.camera
    assert path_cam is not None and path_cam != photo_cam and path_cam.name == "pixels Camera Path"
    fcurves = animation_curves(path_cam)
    assert sorted({fc.data_path for fc in fcurves}) == ["location", "rotation_euler"] and len(fcurves) == 6
    assert all([k.co[0] for k in fc.keyframe_points] == list(range(3, 15)) for fc in fcurves)
    assert photo_cam.animation_data is None  # the photo's camera keeps matching the photo

    # The keyed camera, read back per frame relative to the splats, is the reference path.
    views, Ks = sharp.preview.frame_cameras(bpy.context, splat, path_cam, range(3, 15))
    depths = sharp.preview.splat_depths(splat)
    expected = trajectory.reference_trajectory(
        trajectory.depth_quantiles(depths),
        (WIDTH, HEIGHT),
        FOCAL,
        trajectory.TrajectoryParams(type="rotate", num_steps=12),
    )
    np.testing.assert_allclose(views, expected.viewmats, atol=1e-5)
    np.testing.assert_allclose(Ks[0], [[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1]], atol=1e-4)
    # "rotate" starts above the source camera (y = -oy in OpenCV, i.e. up) and is back there at the end.
    np.testing.assert_allclose(views[0], views[-1], atol=1e-5)

    assert bpy.ops.sharp.render_preview() == {"FINISHED"}
    videos = sorted((cpu_sidecar / "previews").glob("pixels_preview_*.mp4"))
    colour = [v for v in videos if not v.name.endswith(".depth.mp4")]
    depth = [v for v in videos if v.name.endswith(".depth.mp4")]
    assert len(colour) == 1 and len(depth) == 1
    assert video_frames(str(colour[0])) == ((WIDTH, HEIGHT), 12)
    assert video_frames(str(depth[0])) == ((WIDTH, HEIGHT), 12)
    shown = bpy.data.images[sharp.preview.PREVIEW_IMAGE]
    assert shown.source == "MOVIE" and Path(shown.filepath) == colour[0]
    status = bpy.context.window_manager.sharp_status
    assert not status.busy and status.error == "" and str(colour[0]) in status.message

    # F12-style single frame from the photo's own camera: it sees the photo again.
    scene.camera = photo_cam
    assert bpy.ops.sharp.render_preview_frame() == {"FINISHED"}
    frame = bpy.data.images[sharp.preview.PREVIEW_IMAGE]
    assert tuple(frame.size) == (WIDTH, HEIGHT)
    # Compare the PNG file itself (Blender's pixel buffer is bottom-up and colour-managed).
    from PIL import Image

    png = np.asarray(Image.open(frame.filepath).convert("RGB")).astype(np.float64)
    mse = float(np.mean((png - image) ** 2))
    assert 10 * np.log10(255**2 / max(mse, 1e-12)) > 40.0

    # Moving every point far sideways in the mesh: the preview shows it only with "Render Edited Mesh".
    positions = np.empty(len(splat.data.vertices) * 3, np.float32)
    splat.data.attributes["position"].data.foreach_get("vector", positions)
    positions[0::3] += 100.0
    splat.data.attributes["position"].data.foreach_set("vector", positions)
    splat.data.update()
    for from_mesh, bright in ((False, True), (True, False)):
        scene.sharp_preview.from_mesh = from_mesh
        assert bpy.ops.sharp.render_preview_frame() == {"FINISHED"}
        png = np.asarray(Image.open(bpy.data.images[sharp.preview.PREVIEW_IMAGE].filepath).convert("RGB"))
        assert (png.mean() > 50) == bright


def test_errors_are_reported_without_a_splat(sharp: ModuleType, clean_scene: bpy.types.Scene) -> None:
    with pytest.raises(RuntimeError, match="import or generate one"):
        bpy.ops.sharp.add_camera_path()
    with pytest.raises(RuntimeError, match="import or generate one"):
        bpy.ops.sharp.render_preview()
