from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import bpy

REPO = Path(__file__).resolve().parents[2]
EXTENSION_MODULE = "bl_ext.user_default.sharp_blender"


def test_manifest_validates_with_blenders_own_tool() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_extension.py"), "--validate-only"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "Success" in out.stdout


def test_zip_holds_the_pure_python_package(extension_zip: Path) -> None:
    names = set(zipfile.ZipFile(extension_zip).namelist())
    assert {"blender_manifest.toml", "__init__.py", "ply.py", "conventions.py"} <= names
    assert not any(n.endswith((".whl", ".so", ".pyd")) for n in names)


def test_extension_installs_enables_and_registers(addon: ModuleType) -> None:
    assert EXTENSION_MODULE in bpy.context.preferences.addons
    prefs = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    assert prefs is not None and prefs.device == "auto"
    assert type(prefs).__name__ == "SHARP_AddonPreferences"
