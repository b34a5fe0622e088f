"""The SHARP tab in the 3D viewport's sidebar: Generate from Photo, Display, and a Preview section.

The Preview section is drawn by whoever appends a function to :data:`PREVIEW_DRAW_HOOKS`
(``hook(layout, context)``); with no hook, the sub-panel stays hidden.
"""

from __future__ import annotations

from collections.abc import Callable

import bpy

from . import display, importer, jobs, native_cloud

PREVIEW_DRAW_HOOKS: list[Callable[[bpy.types.UILayout, bpy.types.Context], None]] = []


def _wrap(layout: bpy.types.UILayout, text: str, icon: str = "NONE", width: int = 48) -> None:
    words, line, first = text.split(), "", True
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            layout.label(text=line, icon=icon if first else "BLANK1")
            line, first = word, False
        else:
            line = f"{line} {word}".strip()
    if line:
        layout.label(text=line, icon=icon if first else "BLANK1")


class _SidebarPanel:
    """The SHARP tab of the 3D viewport's sidebar (N panel)."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "SHARP"


class SHARP_PT_generate(_SidebarPanel, bpy.types.Panel):
    bl_idname = "SHARP_PT_generate"
    bl_label = "Generate from Photo"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.sharp  # type: ignore[attr-defined]
        status = context.window_manager.sharp_status  # type: ignore[attr-defined]
        col = layout.column()
        col.prop(settings, "filepath", text="")
        col.prop(settings, "focal_mm")
        col.prop(settings, "device")
        col.prop(settings, "placement")
        busy = jobs.ACTIVE is not None and not jobs.ACTIVE.finished
        jobs.prestart_model(context, "panel")
        loading = jobs.PRESTART.label() if jobs.PRESTART is not None and not busy else ""
        if loading:
            box = layout.box()
            box.label(text=loading, icon="TIME")
            box.progress(factor=jobs.PRESTART.fraction, text="Generate will start as soon as it is ready")
        row = col.row()
        row.enabled = not busy
        op = row.operator("sharp.predict", icon="IMAGE_DATA")
        op.filepath = settings.filepath
        op.focal_mm = settings.focal_mm
        op.device = settings.device
        op.placement = settings.placement
        if busy:
            box = layout.box()
            box.label(text=status.stage or "Starting the sidecar…", icon="TIME")
            box.prop(status, "progress", text="Progress", slider=True)
            box.operator("sharp.cancel", icon="CANCEL")
        if status.error:
            _wrap(layout.box(), status.error, icon="ERROR")
        elif status.message:
            _wrap(layout, status.message, icon="CHECKMARK")
        row = layout.row(align=True)
        row.operator("sharp.import_ply", text="Import PLY", icon="IMPORT")
        row.operator("sharp.export_ply", text="Export PLY", icon="EXPORT")


class SHARP_PT_display(_SidebarPanel, bpy.types.Panel):
    bl_idname = "SHARP_PT_display"
    bl_label = "Display"
    bl_parent_id = "SHARP_PT_generate"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return importer.is_splat_object(context.active_object)

    def draw(self, context: bpy.types.Context) -> None:
        obj = context.active_object
        if obj is None:
            return
        col = self.layout.column()
        current = native_cloud.display_of(obj)
        if native_cloud.supported():
            row = col.row(align=True)
            for mode, label, _ in native_cloud.DISPLAY_ITEMS:
                op = row.operator("sharp.set_display", text=label, depress=mode == current)
                op.mode = mode
        mod = display.modifier(obj)
        if mod is not None:
            for name in (display.POINT_SIZE, display.OPACITY_THRESHOLD):
                owner, path = display.input_property(mod, name)
                col.prop(owner, path, text=name)
            for line in display.POINTS_NOTE:
                col.label(text=line, icon="INFO" if line == display.POINTS_NOTE[0] else "BLANK1")
        col.label(text=f"{importer.splat_count(obj):,} splats", icon="POINTCLOUD_DATA")
        camera_name = obj.get(importer.PROP_CAMERA)
        if camera_name:
            col.label(text=f"Camera: {camera_name}", icon="CAMERA_DATA")
        col.operator("sharp.render_setup", icon="SCENE")


class SHARP_PT_preview(_SidebarPanel, bpy.types.Panel):
    bl_idname = "SHARP_PT_preview"
    bl_label = "Preview"
    bl_parent_id = "SHARP_PT_generate"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return bool(PREVIEW_DRAW_HOOKS)

    def draw(self, context: bpy.types.Context) -> None:
        for hook in PREVIEW_DRAW_HOOKS:
            hook(self.layout, context)


CLASSES = (SHARP_PT_generate, SHARP_PT_display, SHARP_PT_preview)
