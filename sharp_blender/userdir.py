"""The add-on's package name and its user folder, below the preferences so that every module can use them."""

from __future__ import annotations

from pathlib import Path

import bpy


def package() -> str:
    return __package__ or "sharp_blender"


def user_dir(*parts: str) -> Path:
    """A folder under the extension's user directory (kept across updates), created if needed."""
    try:
        base = bpy.utils.extension_path_user(package(), create=True)
    except (ValueError, TypeError):  # legacy add-on install (not an extension): no user path
        base = str(Path(bpy.utils.user_resource("DATAFILES", path="sharp_blender", create=True)))
    path = Path(base, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
