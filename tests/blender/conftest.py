"""Blender tests: bpy (Blender as a module) in background mode, with the add-on installed from the built zip.

Blender's user folders are redirected to a temporary directory before bpy is imported, so tests never
touch the real user configuration. The extension zip is built with Blender's own ``blender_ext.py``
and installed with ``extensions.package_install_files``, exactly as a user installs it.
"""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="sharp-blender-user-")

import bpy  # noqa: E402

EXTENSION_MODULE = "bl_ext.user_default.sharp_blender"


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("dist")
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_extension.py"), "--out-dir", str(out_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def addon(extension_zip: Path) -> Iterator[ModuleType]:
    """The installed, enabled extension's top-level module."""
    result = bpy.ops.extensions.package_install_files(
        filepath=str(extension_zip), repo="user_default", enable_on_install=True
    )
    assert result == {"FINISHED"}, result
    yield importlib.import_module(EXTENSION_MODULE)


@pytest.fixture
def clean_scene(addon: ModuleType) -> Iterator[bpy.types.Scene]:
    """An empty scene per test (the add-on stays enabled)."""
    bpy.ops.wm.read_homefile(use_empty=True)
    yield bpy.context.scene


FAKE_SIDECAR = REPO / "tests" / "fake_sidecar.py"


@pytest.fixture
def sharp(addon: ModuleType) -> ModuleType:
    """The installed extension's package with its submodules imported (sharp.importer, sharp.jobs, ...)."""
    for name in (
        "client",
        "jobs",
        "importer",
        "exporter",
        "display",
        "camera",
        "placement",
        "splat",
        "io.ply",
        "prefs",
    ):
        importlib.import_module(f"{EXTENSION_MODULE}.{name}")
    return addon


@pytest.fixture
def fake_sidecar(sharp: ModuleType, tmp_path: Path) -> Iterator[Callable[..., None]]:
    """Point the add-on at tests/fake_sidecar.py; call it with the fake's flags (e.g. "--crash")."""
    prefs = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    checkpoint = tmp_path / "fake-checkpoint.pt"
    checkpoint.write_bytes(b"the fake sidecar never reads this")
    saved = (prefs.sidecar_command, prefs.checkpoint_path, prefs.output_dir)

    def use(*flags: str) -> None:
        prefs.sidecar_command = shlex.join([sys.executable, str(FAKE_SIDECAR), *flags])
        prefs.checkpoint_path = str(checkpoint)
        prefs.output_dir = str(tmp_path / "ply")

    use()
    yield use
    sharp.jobs.shutdown()
    prefs.sidecar_command, prefs.checkpoint_path, prefs.output_dir = saved


@pytest.fixture
def make_photo() -> Callable[..., Path]:
    return write_photo


def write_photo(path: Path, width: int = 32, height: int = 24, seed: int = 0) -> Path:
    """A small smooth test photo (gradients plus a few blobs), saved as PNG or JPEG by suffix."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    rgb = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx + 4 * yy)], axis=-1)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 0.75), rng.uniform(0.05, 0.2)
        rgb += rng.uniform(-0.5, 0.5, 3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)[..., None]
    Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(path)
    return path
