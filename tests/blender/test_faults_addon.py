"""Fault injection in the add-on (part of the issue-13 suite in tests/faults; here for the bpy fixtures): every
failure ends in the panel with a message, within a deadline, leaves no half-made object or camera, and the next
Generate works."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest

from sharp_blender.io import ply

EXTENSION_MODULE = "bl_ext.user_default.sharp_blender"


def _no_new_data() -> bool:
    return not bpy.data.objects and not bpy.data.meshes and not bpy.data.cameras and not bpy.data.pointclouds


def _splat_names() -> list[str]:
    """The splat objects, whichever display the import chose (a mesh, or a native cloud on Blender 5.3+)."""
    return sorted(o.name for o in bpy.data.objects if o.type in ("MESH", "POINTCLOUD"))


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARP_SIDECAR_START_TIMEOUT", "2")
    monkeypatch.setenv("SHARP_SIDECAR_IDLE_TIMEOUT", "1.5")


@pytest.mark.parametrize(
    ("flags", "step"),
    [(("--hang",), "stalled"), (("--wrong-id",), "stalled"), (("--no-ready", "--hang"), "start-up")],
)
def test_background_predict_on_a_stuck_sidecar_ends_with_a_message_and_the_next_works(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    fake_sidecar: Callable[..., None],
    make_photo: Callable[..., Path],
    tmp_path: Path,
    short_deadlines: None,
    flags: tuple[str, ...],
    step: str,
) -> None:
    photo = make_photo(tmp_path / "p.png")
    fake_sidecar(*flags)
    with pytest.raises(RuntimeError, match=step) as info:
        bpy.ops.sharp.predict(filepath=str(photo))
    assert "sidecar-" in str(info.value) and ".log" in str(info.value)  # where the log is
    status = bpy.context.window_manager.sharp_status
    assert not status.busy and step in status.error
    assert _no_new_data() and sharp.jobs.ACTIVE is None
    fake_sidecar()
    assert bpy.ops.sharp.predict(filepath=str(photo)) == {"FINISHED"}
    # "p", or "p_2" when the stuck sidecar had written p.ply before it answered under the wrong id
    assert _splat_names() in (["p"], ["p_2"])


def test_a_malformed_answer_is_an_error_in_the_panel_not_a_dead_client(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    fake_sidecar: Callable[..., None],
    make_photo: Callable[..., Path],
    tmp_path: Path,
) -> None:
    photo = make_photo(tmp_path / "p.png")
    fake_sidecar("--malformed", "result-list")
    with pytest.raises(RuntimeError, match="malformed"):
        bpy.ops.sharp.predict(filepath=str(photo))
    assert _no_new_data() and "malformed" in bpy.context.window_manager.sharp_status.error
    fake_sidecar()
    assert bpy.ops.sharp.predict(filepath=str(photo)) == {"FINISHED"}


def test_a_folder_with_bad_entries_still_makes_the_good_photos(
    clean_scene: bpy.types.Scene, fake_sidecar: Callable[..., None], make_photo: Callable[..., Path], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    make_photo(folder / "a.png")
    make_photo(folder / "c.png", seed=2)
    os.symlink(folder / "gone.jpg", folder / "b.jpg")  # dangling
    (folder / "d.jpg").mkdir()  # a folder named like a photo
    (folder / os.fsdecode(b"e\xff.png")).write_bytes(b"not a png")
    assert bpy.ops.sharp.predict(filepath=str(folder)) == {"FINISHED"}
    assert _splat_names() == ["a", "c"]
    error = bpy.context.window_manager.sharp_status.error
    assert "b.jpg: skipped, a broken link" in error and "d.jpg: skipped, a folder" in error
    assert "e\\xff.png" in error  # the undecodable name shown escaped, not as a crash


def test_an_undecodable_name_in_a_sidecar_error_shows_escaped(
    clean_scene: bpy.types.Scene, fake_sidecar: Callable[..., None], tmp_path: Path
) -> None:
    bad = tmp_path / os.fsdecode(b"caf\xe9.png")
    bad.write_bytes(b"not a png")
    with pytest.raises(RuntimeError, match=r"caf\\xe9\.png: cannot read the image"):
        bpy.ops.sharp.predict(filepath=str(bad))
    assert "caf\\xe9.png" in bpy.context.window_manager.sharp_status.error and _no_new_data()


def test_a_multi_selection_with_a_missing_file_makes_the_others(
    clean_scene: bpy.types.Scene, fake_sidecar: Callable[..., None], make_photo: Callable[..., Path], tmp_path: Path
) -> None:
    make_photo(tmp_path / "x.png")
    files = [{"name": "gone.png"}, {"name": "x.png"}]
    assert bpy.ops.sharp.predict(directory=str(tmp_path), files=files) == {"FINISHED"}
    assert _splat_names() == ["x"]
    assert "gone.png: skipped, not found" in bpy.context.window_manager.sharp_status.error


def test_nan_splats_are_dropped_and_the_origin_stays_finite(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    fake_sidecar: Callable[..., None],
    make_photo: Callable[..., Path],
    tmp_path: Path,
) -> None:
    fake_sidecar("--nan")
    assert bpy.ops.sharp.predict(filepath=str(make_photo(tmp_path / "n.png"))) == {"FINISHED"}
    obj = bpy.data.objects["n"]
    assert sharp.importer.splat_count(obj) == 16 * 12 - 1
    assert np.isfinite(np.array(obj.matrix_world)).all()
    assert np.isfinite(np.array(obj.data[sharp.importer.PROP_ORIGIN])).all()


def _ply(path: Path, cols: dict[str, np.ndarray], f: float = 60.0) -> Path:
    n = len(cols["x"])
    ply.write_ply(path, ply.structured(cols), ply.sharp_metadata(f, (32, 24), n, [0.1, 1.0]))
    return path


def _cols(n: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    cols = {name: rng.normal(size=n).astype(np.float32) for name in ply.SHARP_VERTEX_PROPERTIES}
    cols["z"] += 4.0
    return cols


def test_reserved_property_names_survive_import_and_export(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path
) -> None:
    cols = _cols()
    extras = {"position": 1.0, "Col": 2.0, "radiance:base": 3.0, "." + "hidden": 4.0, "q" * 70: 5.0}
    for i, name in enumerate(extras):
        cols[name] = np.full(30, extras[name] + i, np.float32)
    source = _ply(tmp_path / "r.ply", cols)
    assert bpy.ops.sharp.import_ply(filepath=str(source)) == {"FINISHED"}
    obj = bpy.data.objects["r"]
    data = obj.data
    # The display's own attributes stay ours (the Points display's colour, or the native splats' radiance).
    ours = ("Col", "FLOAT_COLOR") if obj.type == "MESH" else ("radiance:base", "FLOAT4")
    assert data.attributes[ours[0]].data_type == ours[1]
    assert {"ply:Col", "ply:position", "ply:radiance:base"} <= set(data.attributes.keys())
    out = tmp_path / "r_out.ply"
    assert bpy.ops.sharp.export_ply(filepath=str(out), apply_transform=False) == {"FINISHED"}
    exported = ply.read_ply(out).vertex
    assert list(exported.dtype.names) == list(cols)
    for name in extras:
        np.testing.assert_array_equal(exported[name], cols[name])


@pytest.mark.parametrize("case", ["zero-vertices", "all-nan", "duplicate"])
def test_unusable_ply_import_leaves_nothing_and_a_batch_goes_on(
    clean_scene: bpy.types.Scene, tmp_path: Path, case: str
) -> None:
    cols = _cols()
    if case == "zero-vertices":
        bad = _ply(tmp_path / "bad.ply", {k: v[:0] for k, v in cols.items()})
    elif case == "all-nan":
        cols_nan = {k: v.copy() for k, v in cols.items()}
        cols_nan["opacity"][:] = np.nan
        bad = _ply(tmp_path / "bad.ply", cols_nan)
    else:
        header = (
            "ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float x\nend_header\n"
        )
        bad = tmp_path / "bad.ply"
        bad.write_bytes(header.encode() + b"\0" * 8)
    with pytest.raises(RuntimeError, match=r"bad\.ply"):
        bpy.ops.sharp.import_ply(filepath=str(bad))
    assert _no_new_data()
    _ply(tmp_path / "good.ply", cols)
    files = [{"name": "bad.ply"}, {"name": "good.ply"}]
    assert bpy.ops.sharp.import_ply(directory=str(tmp_path), files=files) == {"FINISHED"}
    assert _splat_names() == ["good"]


def test_nan_intrinsics_import_without_a_camera(clean_scene: bpy.types.Scene, tmp_path: Path) -> None:
    assert bpy.ops.sharp.import_ply(filepath=str(_ply(tmp_path / "k.ply", _cols(), f=float("nan")))) == {"FINISHED"}
    assert "k" in bpy.data.objects and not bpy.data.cameras and clean_scene.camera is None


def test_a_failure_while_making_the_camera_removes_everything(
    sharp: ModuleType, clean_scene: bpy.types.Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("render settings exploded")

    monkeypatch.setattr(sharp.camera, "apply_render_settings", broken)
    with pytest.raises(RuntimeError, match="render settings exploded"):
        bpy.ops.sharp.import_ply(filepath=str(_ply(tmp_path / "c.ply", _cols())))
    assert _no_new_data()


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_export_to_a_read_only_folder_is_a_message_and_keeps_the_old_file(
    clean_scene: bpy.types.Scene, tmp_path: Path, read_only: Path
) -> None:
    assert bpy.ops.sharp.import_ply(filepath=str(_ply(tmp_path / "e.ply", _cols()))) == {"FINISHED"}
    target = read_only / "e.ply"
    target.write_bytes(b"an older export")
    subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
    with pytest.raises(RuntimeError, match=r"e\.ply"):
        bpy.ops.sharp.export_ply(filepath=str(target))
    assert target.read_bytes() == b"an older export" and sorted(os.listdir(read_only)) == ["e.ply"]
