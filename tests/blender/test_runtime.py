"""Preferences > Install SHARP Runtime, pressed in bpy against the temporary user folder of conftest.py.

The real pip builds the runtime (venv, the CPU torch wheel torch==2.13.0, the sidecar from the built zip);
the add-on then predicts a photo through it. Offline refusal, a failing pip, Cancel and Remove Runtime too.
"""

from __future__ import annotations

import importlib
import os
import re
import stat
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import bpy
import pytest

from sharp_blender.io import ply

EXTENSION_MODULE = "bl_ext.user_default.sharp_blender"
REPO = Path(__file__).resolve().parents[2]
CPU_TORCH = "torch==2.13.0"  # the CPU wheel CI machines have on disk


def _prefs() -> bpy.types.AddonPreferences:
    return bpy.context.preferences.addons[EXTENSION_MODULE].preferences


def _set_online(allowed: bool) -> None:
    bpy.context.preferences.system.use_online_access = allowed
    assert bpy.app.online_access is allowed


@pytest.fixture
def runtime(sharp: ModuleType) -> Iterator[ModuleType]:
    """The installed extension's runtime.ops, with no runtime at the start and none left at the end."""
    ops = importlib.import_module(f"{EXTENSION_MODULE}.runtime.ops")
    settings = _prefs().runtime
    saved = (settings.torch_requirement, settings.wheels_dir, bpy.context.preferences.system.use_online_access)
    settings.torch_requirement = CPU_TORCH
    assert bpy.ops.sharp.remove_runtime() == {"FINISHED"}
    yield ops
    settings.torch_requirement, settings.wheels_dir, online = saved
    bpy.context.preferences.system.use_online_access = online
    sharp.jobs.shutdown()
    bpy.ops.sharp.remove_runtime()


def _not_ready(ops: ModuleType) -> None:
    root = ops.runtime_root()
    assert not (root / "ready.json").exists() and ops.ready_info() is None and ops.ready_python() is None
    assert not str(_prefs().python()).startswith(str(root))


def test_the_zip_carries_the_sidecar_source_as_plain_files(extension_zip: Path) -> None:
    with zipfile.ZipFile(extension_zip) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    assert {"sidecar/pyproject.toml", "sidecar/README.md", "sidecar/sharp_sidecar/__init__.py"} <= set(infos)
    assert "runtime/installer.py" in infos and "runtime/plan.py" in infos
    assert not [n for n in infos if "__pycache__" in n or ".egg-info" in n or n.endswith(".pyc")]
    assert not [n for n, i in infos.items() if stat.S_ISLNK(i.external_attr >> 16)]  # no links
    # The shared modules ship once, in the add-on's io/ (the sidecar's setup.py builds them in from there).
    assert "io/ply.py" in infos and not [n for n in infos if n.startswith("sidecar/sharp_sidecar/io/")]


class _Recorder:
    """Stands in for a UILayout: records every call (box/row/column return itself)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []

    def __getattr__(self, name: str) -> Callable[..., _Recorder]:
        def call(*args: object, **kwargs: object) -> _Recorder:
            self.calls.append((name, {"args": args, **kwargs}))
            return self

        return call

    def texts(self, kind: str) -> list[str]:
        return [str(kw.get("text") or kw["args"][0]) for name, kw in self.calls if name == kind]


def test_preferences_section_progress_and_the_timer_path(runtime: ModuleType, tmp_path: Path) -> None:
    settings = _prefs().runtime
    layout = _Recorder()
    runtime.draw(layout, settings)
    assert any("Not installed" in t for t in layout.texts("label"))
    assert "Install SHARP Runtime" in layout.texts("operator")
    # The UI's path: a thread, and the timer callback draining its queue (timers never fire in background
    # mode, so the test calls it). An old Python makes it end quickly, with a plain message.
    old = tmp_path / "python3.9"
    old.write_text('#!/bin/sh\necho \'{"version": [3, 9, 7], "venv": true, "ensurepip": true}\'\n')
    old.chmod(0o755)
    settings.python_path = str(old)
    try:
        runtime.start_in_background(runtime.begin(runtime.options(settings)))
        busy = _Recorder()
        runtime.draw(busy, settings)
        assert [name for name, _ in busy.calls].count("progress") == 1
        assert "sharp.cancel_runtime_install" in busy.texts("operator")
        deadline = time.monotonic() + 30
        while runtime._tick() is not None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        settings.python_path = ""
        if bpy.app.timers.is_registered(runtime._tick):
            bpy.app.timers.unregister(runtime._tick)
    assert not runtime.STATE.busy and "Python 3.9.7" in runtime.STATE.error
    done = _Recorder()
    runtime.draw(done, settings)
    labels = " ".join(done.texts("label"))
    assert "unsupported Python" in labels and f"Log: {runtime.runtime_root() / 'install.log'}" in labels
    _not_ready(runtime)


def test_offline_without_wheels_is_refused_with_what_to_download(runtime: ModuleType) -> None:
    _set_online(False)
    with pytest.raises(RuntimeError, match="online access is off") as caught:
        bpy.ops.sharp.install_runtime()
    message = str(caught.value)
    for wanted in ("pip download", CPU_TORCH, "numpy", "pillow-heif", "setuptools", "Offline Wheels"):
        assert wanted in message, wanted
    assert runtime.STATE.error in message and not runtime.STATE.busy
    assert not (runtime.runtime_root() / "venv").exists()
    _not_ready(runtime)


def test_failing_pip_shows_its_own_message(runtime: ModuleType, tmp_path: Path) -> None:
    _set_online(False)
    empty = tmp_path / "no wheels here"
    empty.mkdir()
    _prefs().runtime.wheels_dir = str(empty)
    with pytest.raises(RuntimeError, match=r"the offline wheels folder has no \S+ for this Python and OS") as caught:
        bpy.ops.sharp.install_runtime()
    state = runtime.STATE
    assert "while installing torch" in state.error and state.error in str(caught.value)
    # pip's own last lines (pip's configured find-links, e.g. CI's torch wheel folder, still apply: then a
    # dependency of torch is what the empty folder lacks; where no torch fits this Python, pip's
    # configured cap makes it a resolution conflict).
    assert re.search(r"^ERROR: (No matching distribution found for|Cannot install) ", state.tail, re.M)
    assert state.tail in str(caught.value)
    log = runtime.runtime_root() / "install.log"
    assert state.log == log and str(empty) in log.read_text() and state.tail.splitlines()[-1] in log.read_text()
    _not_ready(runtime)


def test_cancel_stops_the_install_and_leaves_nothing_ready(runtime: ModuleType) -> None:
    _set_online(True)
    log = runtime.runtime_root() / "install.log"

    def press_cancel_once_torch_installs() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if log.is_file() and "] installing torch" in log.read_text():
                time.sleep(1.0)  # pip is running now
                runtime.STATE.cancel()  # what the Cancel button's operator calls
                return
            time.sleep(0.1)

    canceller = threading.Thread(target=press_cancel_once_torch_installs)
    canceller.start()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="install cancelled"):
        bpy.ops.sharp.install_runtime()
    canceller.join()
    assert time.monotonic() - started < 60
    assert not runtime.STATE.busy and "cancelled" in runtime.STATE.error
    _not_ready(runtime)
    # Remove Runtime deletes the half-made environment too.
    assert (runtime.runtime_root() / "venv").is_dir()
    assert bpy.ops.sharp.remove_runtime() == {"FINISHED"}
    assert not runtime.runtime_root().exists()


@pytest.mark.slow
def test_install_then_predict_through_the_runtime_then_remove(
    runtime: ModuleType, clean_scene: bpy.types.Scene, make_photo: Callable[..., Path], tmp_path: Path
) -> None:
    """About 1-2 minutes on two cores: the real pip installs the 183 MB CPU torch wheel and the sidecar."""
    _set_online(True)
    prefs = _prefs()
    saved = (prefs.sidecar_command, prefs.python_path, prefs.checkpoint_path, prefs.output_dir, prefs.device)
    prefs.sidecar_command, prefs.python_path = "", ""
    started = time.monotonic()
    assert bpy.ops.sharp.install_runtime() == {"FINISHED"}
    install_s = time.monotonic() - started
    print(f"\nSHARP runtime install: {install_s:.1f} s")
    root = runtime.runtime_root()
    info = runtime.ready_info()
    sidecar_version = tomllib.loads((REPO / "sidecar" / "pyproject.toml").read_text())["project"]["version"]
    assert info is not None and info["version"] == sidecar_version
    assert info["torch"].startswith("2.13.0") and info["device"] == "cpu" and info["build"] == "cpu"
    python = Path(info["python"])
    assert python == root / "venv" / "bin" / "python" and prefs.python() == python
    # The sidecar came from the zip (a plain install inside the runtime), not from the repository.
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u; print(*(u.find_spec(m).origin for m in ('sharp_sidecar', 'torch')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(root / "venv") for p in where), where
    assert not (root / "build").exists()

    checkpoint = tmp_path / "tiny.pt"
    # Made by this venv's torch (already warm); the runtime's sidecar reads it like any checkpoint.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, torch; from sharp_sidecar.model import create_predictor; torch.manual_seed(0); "
            "torch.save(create_predictor('tiny').state_dict(), sys.argv[1])",
            str(checkpoint),
        ],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    prefs.checkpoint_path, prefs.output_dir, prefs.device = str(checkpoint), str(tmp_path / "ply"), "cpu"
    started = time.monotonic()
    try:
        photo = make_photo(tmp_path / "yard.png", 64, 48)
        assert bpy.ops.sharp.predict(filepath=str(photo)) == {"FINISHED"}
        print(f"first photo through the new runtime: {time.monotonic() - started:.1f} s")
        assert sharp_module().jobs.get_client(bpy.context).command[0] == str(python)
    finally:
        sharp_module().jobs.shutdown()
        prefs.sidecar_command, prefs.python_path, prefs.checkpoint_path, prefs.output_dir, prefs.device = saved
    obj = bpy.data.objects["yard"]
    data = ply.read_gaussians(obj.data[sharp_module().importer.PROP_SOURCE])
    assert data.count == len(obj.data.vertices) > 0 and data.camera is not None
    assert data.camera.image_size == (64, 48)

    assert bpy.ops.sharp.remove_runtime() == {"FINISHED"}
    assert not root.exists() and runtime.ready_python() is None and prefs.python() != python


def sharp_module() -> ModuleType:
    return importlib.import_module(EXTENSION_MODULE)
