"""Blender tests: bpy (Blender as a module) in background mode, with the add-on installed from the built zip.

Blender's user folders are redirected to a temporary directory before bpy is imported, so tests never
touch the real user configuration. The extension zip is built with Blender's own ``blender_ext.py``
and installed with ``extensions.package_install_files``, exactly as a user installs it.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
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
