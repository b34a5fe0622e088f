"""Registration of every bpy class, property and handler, in order (reversed on unregister)."""

from __future__ import annotations

import bpy

from . import prefs

CLASSES: tuple[type, ...] = (*prefs.CLASSES,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
