"""bpy.ops.sharp.predict end to end (synchronous path of background mode) with the fake and the real sidecar."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest

from sharp_blender.io import ply

EXTENSION_MODULE = "bl_ext.user_default.sharp_blender"


def _prefs() -> bpy.types.AddonPreferences:
    return bpy.context.preferences.addons[EXTENSION_MODULE].preferences


def test_predict_with_the_fake_sidecar_makes_object_and_camera(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    fake_sidecar: Callable[..., None],
    make_photo: Callable[..., Path],
    tmp_path: Path,
) -> None:
    photo = make_photo(tmp_path / "garden.png", 32, 24)
    assert bpy.ops.sharp.predict(filepath=str(photo), focal_mm=50.0) == {"FINISHED"}
    obj = bpy.data.objects["garden"]
    cam = bpy.data.objects["garden Camera"]
    assert sharp.importer.splat_count(obj) == 16 * 12
    assert clean_scene.camera == cam
    assert (clean_scene.render.resolution_x, clean_scene.render.resolution_y) == (32, 24)
    # 50 mm (35 mm equivalent) -> f_px = 50 * diag / 43.27; AUTO fit with a 36 mm sensor on the long side.
    f_px = 50.0 * np.hypot(32, 24) / np.hypot(36, 24)
    assert cam.data.lens == pytest.approx(f_px * 36 / 32, rel=1e-6)
    assert cam.data.background_images[0].image.filepath == str(photo)
    if obj.type == "MESH":  # the points display; Blender >= 5.3 draws native Gaussians (test_native.py)
        assert obj.modifiers["SHARP Splats"].node_group is not None
    status = bpy.context.window_manager.sharp_status
    assert not status.busy and status.error == "" and "garden" in status.message
    ply_path = Path(obj.data[sharp.importer.PROP_SOURCE])
    assert ply_path.parent == tmp_path / "ply" and ply.read_gaussians(ply_path).count == 192


def test_a_folder_makes_one_object_per_photo(
    clean_scene: bpy.types.Scene, fake_sidecar: Callable[..., None], make_photo: Callable[..., Path], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(("a.png", "b.jpg", "c.png")):
        make_photo(folder / name, 16 + 4 * i, 12, seed=i)
    (folder / "notes.txt").write_text("not a photo")
    assert bpy.ops.sharp.predict(filepath=str(folder)) == {"FINISHED"}
    assert {o.name for o in bpy.data.objects if o.type in ("MESH", "POINTCLOUD")} == {"a", "b", "c"}
    assert len(bpy.data.objects["c"].data.attributes["position"].data) == 12 * 6


def test_multi_file_selection(
    clean_scene: bpy.types.Scene, fake_sidecar: Callable[..., None], make_photo: Callable[..., Path], tmp_path: Path
) -> None:
    for name in ("x.png", "y.png"):
        make_photo(tmp_path / name)
    files = [{"name": "x.png"}, {"name": "y.png"}]
    assert bpy.ops.sharp.predict(directory=str(tmp_path), files=files) == {"FINISHED"}
    assert {o.name for o in bpy.data.objects if o.type in ("MESH", "POINTCLOUD")} == {"x", "y"}


def _no_new_data() -> bool:
    clouds = getattr(bpy.data, "pointclouds", ())
    return not bpy.data.objects and not bpy.data.meshes and not clouds and not bpy.data.cameras


def test_bad_image_is_an_operator_error_and_leaves_nothing(
    clean_scene: bpy.types.Scene, fake_sidecar: Callable[..., None], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(RuntimeError, match=r"broken\.jpg: cannot read the image"):
        bpy.ops.sharp.predict(filepath=str(bad))
    assert _no_new_data()
    assert "broken.jpg" in bpy.context.window_manager.sharp_status.error


def test_one_bad_photo_does_not_stop_the_others(
    clean_scene: bpy.types.Scene, fake_sidecar: Callable[..., None], make_photo: Callable[..., Path], tmp_path: Path
) -> None:
    make_photo(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    files = [{"name": "bad.png"}, {"name": "good.png"}]
    assert bpy.ops.sharp.predict(directory=str(tmp_path), files=files) == {"FINISHED"}
    assert [o.name for o in bpy.data.objects if o.type in ("MESH", "POINTCLOUD")] == ["good"]
    assert "bad.png" in bpy.context.window_manager.sharp_status.error


def test_sidecar_crash_is_reported_with_its_log_and_the_next_run_restarts_it(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    fake_sidecar: Callable[..., None],
    make_photo: Callable[..., Path],
    tmp_path: Path,
) -> None:
    photo = make_photo(tmp_path / "p.png")
    fake_sidecar("--crash")
    with pytest.raises(RuntimeError, match=r"stopped unexpectedly \(exit code 3\)[\s\S]*crashing on purpose"):
        bpy.ops.sharp.predict(filepath=str(photo))
    assert _no_new_data()
    fake_sidecar()  # a fresh process on the next request
    assert bpy.ops.sharp.predict(filepath=str(photo)) == {"FINISHED"}
    assert "p" in bpy.data.objects


@pytest.mark.parametrize("flags", [("--delay", "0.5"), ("--delay", "3", "--ignore-cancel")])
def test_cancel_stops_the_run_and_leaves_nothing(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    fake_sidecar: Callable[..., None],
    make_photo: Callable[..., Path],
    tmp_path: Path,
    flags: tuple[str, ...],
) -> None:
    """Cancel from another thread while the synchronous run waits (the Esc / Cancel button path)."""
    fake_sidecar(*flags)
    client = sharp.jobs.get_client(bpy.context)
    client.cancel_grace_s = 0.5
    photos = [make_photo(tmp_path / f"{n}.png") for n in ("one", "two")]
    run = sharp.jobs.PredictRun(photos, {"device": "cpu"}, "ORIGIN", tmp_path / "out")

    def cancel_when_started() -> None:
        while run.job is None or run.job.progress is None:
            time.sleep(0.01)
        run.cancel()

    threading.Thread(target=cancel_when_started, daemon=True).start()
    t0 = time.monotonic()
    run.run_blocking(bpy.context, timeout=30)
    assert time.monotonic() - t0 < 10
    made, errors = run.summary()
    assert made == [] and any("cancelled" in e for e in errors)
    assert _no_new_data()
    assert not list((tmp_path / "out").glob("*.ply")) if (tmp_path / "out").exists() else True


def test_missing_sidecar_python_is_a_clear_error(
    sharp: ModuleType, clean_scene: bpy.types.Scene, make_photo: Callable[..., Path], tmp_path: Path
) -> None:
    prefs = _prefs()
    saved = (prefs.sidecar_command, prefs.python_path)
    prefs.sidecar_command, prefs.python_path = "", str(tmp_path / "nowhere" / "python")
    try:
        with pytest.raises(RuntimeError, match=r"no sidecar Python at .*nowhere.*scripts/setup\.sh"):
            bpy.ops.sharp.predict(filepath=str(make_photo(tmp_path / "p.png")))
    finally:
        prefs.sidecar_command, prefs.python_path = saved
    assert _no_new_data()


def test_missing_checkpoint_is_a_clear_error(
    clean_scene: bpy.types.Scene, fake_sidecar: Callable[..., None], make_photo: Callable[..., Path], tmp_path: Path
) -> None:
    _prefs().checkpoint_path = str(tmp_path / "missing.pt")
    with pytest.raises(RuntimeError, match=r"no SHARP checkpoint at .*missing\.pt"):
        bpy.ops.sharp.predict(filepath=str(make_photo(tmp_path / "p.png")))
    assert _no_new_data()


def test_check_sidecar_shows_version_and_device(sharp: ModuleType, fake_sidecar: Callable[..., None]) -> None:
    assert bpy.ops.sharp.check_sidecar() == {"FINISHED"}
    assert sharp.prefs.LAST_CHECK["Version"] == "0.0-fake" and sharp.prefs.LAST_CHECK["Device"] == "cpu"


def test_disabling_the_addon_stops_the_sidecar(sharp: ModuleType, fake_sidecar: Callable[..., None]) -> None:
    client = sharp.jobs.get_client(bpy.context)
    client.wait_ready(30)
    assert client.running
    sharp.jobs.shutdown()  # what unregister() calls
    assert not client.running


@pytest.mark.slow
def test_predict_with_the_real_sidecar_on_cpu(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    ref_weights_path: Path,
    full_forward_lock: None,
    reference_images: dict[str, Path],
    tmp_path: Path,
    sidecar_python: str,
) -> None:
    """The real `sharp serve` (the 3.11 venv's Python, sidecar installed editable) with the generated weights."""
    prefs = _prefs()
    saved = (prefs.sidecar_command, prefs.checkpoint_path, prefs.output_dir, prefs.device, prefs.keep_model)
    prefs.sidecar_command = ""
    prefs.python_path = sidecar_python
    prefs.checkpoint_path = str(ref_weights_path)
    prefs.output_dir = str(tmp_path / "ply")
    prefs.device, prefs.keep_model = "cpu", False
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    try:
        photo = reference_images["synth_640x480"]
        assert bpy.ops.sharp.predict(filepath=str(photo)) == {"FINISHED"}
    finally:
        sharp.jobs.shutdown()
        prefs.sidecar_command, prefs.checkpoint_path, prefs.output_dir, prefs.device, prefs.keep_model = saved
        prefs.python_path = ""
    obj = bpy.data.objects[photo.stem]
    assert sharp.importer.splat_count(obj) == 2 * 768 * 768
    cam = bpy.data.objects[f"{photo.stem} Camera"]
    assert (clean_scene.render.resolution_x, clean_scene.render.resolution_y) == (640, 480)
    assert cam.data.shift_x == pytest.approx(0, abs=1e-9) and cam.data.shift_y == pytest.approx(0, abs=1e-9)
    # The camera reproduces the PLY's intrinsics (SHARP: f_px from EXIF or 30 mm, principal point centred).
    data = ply.read_gaussians(obj.data[sharp.importer.PROP_SOURCE])
    assert data.camera is not None and data.camera.image_size == (640, 480)
    np.testing.assert_allclose(sharp.camera.intrinsics(cam, clean_scene), data.camera.K, rtol=1e-6)
    assert np.isfinite(data.means).all()
