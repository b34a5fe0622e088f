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
    assert {"blender_manifest.toml", "__init__.py", "io/ply.py", "io/conventions.py", "sidecar/setup.py"} <= names
    assert not any(n.endswith((".whl", ".so", ".pyd")) for n in names)


def test_extension_installs_enables_and_registers(addon: ModuleType) -> None:
    assert EXTENSION_MODULE in bpy.context.preferences.addons
    prefs = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    assert prefs is not None and prefs.device == "auto"
    assert type(prefs).__name__ == "SHARP_AddonPreferences"


def test_operators_panels_and_settings_are_registered(addon: ModuleType) -> None:
    for op in ("predict", "cancel", "import_ply", "export_ply", "check_sidecar"):
        assert hasattr(bpy.ops.sharp, op), op
    for panel in ("SHARP_PT_generate", "SHARP_PT_display", "SHARP_PT_preview"):
        cls = getattr(bpy.types, panel)
        assert cls.bl_category == "SHARP" and cls.bl_space_type == "VIEW_3D" and cls.bl_region_type == "UI"
    settings = bpy.context.scene.sharp
    assert (settings.focal_mm, settings.device, settings.placement) == (0.0, "PREFS", "ORIGIN")
    assert not bpy.context.window_manager.sharp_status.busy
    prefs = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    assert prefs.keep_model and prefs.python_path == "" and prefs.sidecar_command == ""
    if hasattr(bpy.types, "FileHandler"):
        assert bpy.types.SHARP_FH_import_ply.bl_import_operator == "sharp.import_ply"


def test_zip_has_only_relative_imports(extension_zip: Path) -> None:
    archive = zipfile.ZipFile(extension_zip)
    for name in archive.namelist():
        if name.endswith(".py"):
            source = archive.read(name).decode()
            assert "import sharp_blender" not in source and "from sharp_blender" not in source, name
