"""Registration of every bpy class, property and handler, in order (reversed on unregister).

To add a module's classes, append its ``CLASSES`` to :data:`CLASSES` (panels after the panels they
nest in, e.g. sub-panels of ``SHARP_PT_generate`` after ``ui.CLASSES``).
"""

from __future__ import annotations

import bpy

from . import jobs, ops, prefs, preview_ops, props, render_setup, ui
from .runtime import ops as runtime_ops

CLASSES: tuple[type, ...] = (
    *prefs.CLASSES,
    *props.CLASSES,
    *ops.CLASSES,
    *runtime_ops.CLASSES,
    *render_setup.CLASSES,
    *ui.CLASSES,
    *preview_ops.CLASSES,
)


def _menu_import(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    self.layout.operator(ops.SHARP_OT_import_ply.bl_idname, text="Gaussian Splats (SHARP) (.ply)")


def _menu_export(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    self.layout.operator(ops.SHARP_OT_export_ply.bl_idname, text="Gaussian Splats (SHARP) (.ply)")


@bpy.app.handlers.persistent
def _on_load_post(*args: object) -> None:
    jobs.prestart_model(bpy.context, "file_load")


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    props.register()
    preview_ops.register()
    runtime_ops.STOP_SIDECAR[:] = [jobs.shutdown]
    bpy.types.TOPBAR_MT_file_import.append(_menu_import)
    bpy.types.TOPBAR_MT_file_export.append(_menu_export)
    bpy.app.handlers.load_post.append(_on_load_post)


def unregister() -> None:
    if _on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load_post)
    jobs.shutdown()
    runtime_ops.shutdown()
    bpy.types.TOPBAR_MT_file_export.remove(_menu_export)
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)
    preview_ops.unregister()
    props.unregister()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
