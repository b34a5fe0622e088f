"""Preview operators: Add Camera Path, Render Preview (the frame range) and Preview Frame (F12-style).

Their settings live in ``Scene.sharp_preview``; the panel section is drawn through
``ui.PREVIEW_DRAW_HOOKS``. In background mode (``blender -b``) the render operators wait for the
sidecar instead of running modally.
"""

from __future__ import annotations

import logging
from typing import Any

import bpy

from . import client, jobs, preview, ui
from .io import trajectory

logger = logging.getLogger(__name__)

TIMER_S = 0.1
TRAJECTORY_ITEMS = (
    ("rotate_forward", "Rotate Forward", "Circle sideways while moving in and out (the reference default)"),
    ("rotate", "Rotate", "Circle around the optical axis"),
    ("swipe", "Swipe", "Slide from left to right"),
    ("shake", "Shake", "Sway left-right, then up-down"),
)


class SHARP_PreviewSettings(bpy.types.PropertyGroup):
    trajectory: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Path", description="The camera path to create", items=TRAJECTORY_ITEMS, default="rotate_forward"
    )
    max_disparity: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Max Disparity",
        description="Sideways motion as a fraction of the image diagonal at the nearest depth",
        min=0.0,
        max=1.0,
        default=0.08,
    )
    max_zoom: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Max Zoom", description="Forward motion as a fraction of the nearest depth", min=0.0, max=1.0, default=0.15
    )
    distance_m: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Distance", description="Constant forward offset of the path", default=0.0, unit="LENGTH"
    )
    num_repeats: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Repeats", description="How many times the motion repeats over the frame range", min=1, max=100, default=1
    )
    from_mesh: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Render Edited Mesh",
        description="Render the splat mesh as it is now (exported first) rather than the PLY it was imported from",
        default=False,
    )
    use_copy: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Animate a Copy",
        description="Animate a copy of the photo's camera (the original keeps matching the photo)",
        default=True,
    )


def _params(settings: Any) -> trajectory.TrajectoryParams:
    return trajectory.TrajectoryParams(
        type=settings.trajectory,
        max_disparity=settings.max_disparity,
        max_zoom=settings.max_zoom,
        distance_m=settings.distance_m,
        num_repeats=settings.num_repeats,
    )


class SHARP_OT_add_camera_path(bpy.types.Operator):
    """Animate the photo's camera (or a copy) along the reference camera path over the frame range"""

    bl_idname = "sharp.add_camera_path"
    bl_label = "Add Camera Path"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings = context.scene.sharp_preview
        try:
            splat_obj = preview.find_splat(context)
            cam = preview.add_camera_path(context, splat_obj, _params(settings), settings.use_copy)
        except (preview.PreviewError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        scene = context.scene
        self.report(
            {"INFO"},
            f"{cam.name}: {settings.trajectory} path keyed on frames {scene.frame_start}-{scene.frame_end}",
        )
        return {"FINISHED"}


class _RenderOperator:
    """Shared modal / blocking logic of the two render operators."""

    single = False
    _run: preview.RenderRun | None = None
    _timer: Any = None

    def execute(self, context: bpy.types.Context) -> set[str]:
        if jobs.ACTIVE is not None and not jobs.ACTIVE.finished:
            self.report({"ERROR"}, "a SHARP job is already running: wait for it or cancel it")
            return {"CANCELLED"}
        try:
            run = preview.prepare_render(context, self.single, from_mesh=context.scene.sharp_preview.from_mesh)
            if bpy.app.background:
                run.run_blocking(context)
                return self._finish(context, run)
            run.start(context)
        except (preview.PreviewError, jobs.JobError, client.SidecarError, OSError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        jobs.ACTIVE = self._run = run
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_S, window=context.window)
        wm.modal_handler_add(self)
        preview.update_status(context, run)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        run = self._run
        assert run is not None
        if event.type == "ESC" and event.value == "PRESS":
            run.cancel()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        done = run.poll(context)
        if context.workspace is not None:
            context.workspace.status_text_set(None if done else f"SHARP preview: {run.stage}  (Esc to cancel)")
        for area in context.screen.areas if context.screen else ():
            area.tag_redraw()
        if not done:
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        jobs.ACTIVE = None
        return self._finish(context, run)

    def _finish(self, context: bpy.types.Context, run: preview.RenderRun) -> set[str]:
        if run.error or run.result is None:
            self.report({"ERROR"}, run.error or "the preview was cancelled")
            return {"CANCELLED"}
        image = preview.show_result(context, run)
        where = run.result.get("png_dir") if run.single else run.result.get("video")
        extra = f"; depth: {run.result['depth_video']}" if run.result.get("depth_video") else ""
        shown = f" (image '{image.name}')" if image is not None else ""
        self.report(
            {"INFO"},
            f"SHARP preview: {run.result['frames']} frame(s) {run.result['width']}x{run.result['height']} "
            f"({run.result.get('backend')}) -> {where}{extra}{shown}",
        )
        return {"FINISHED"}


class SHARP_OT_render_preview(_RenderOperator, bpy.types.Operator):
    """Render the scene camera's animation over the frame range with the sidecar (gsplat) to a video"""

    bl_idname = "sharp.render_preview"
    bl_label = "Render Preview"


class SHARP_OT_render_preview_frame(_RenderOperator, bpy.types.Operator):
    """Render the current frame from the scene camera with the sidecar (gsplat), like F12"""

    bl_idname = "sharp.render_preview_frame"
    bl_label = "Preview Frame"
    single = True


def draw_preview(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    """The Preview section of the SHARP panel (registered in ``ui.PREVIEW_DRAW_HOOKS``)."""
    settings = context.scene.sharp_preview
    col = layout.column()
    col.prop(settings, "trajectory")
    sub = col.column(align=True)
    sub.prop(settings, "max_disparity")
    if settings.trajectory == "rotate_forward":
        sub.prop(settings, "max_zoom")
    sub.prop(settings, "distance_m")
    sub.prop(settings, "num_repeats")
    col.prop(settings, "use_copy")
    col.operator(SHARP_OT_add_camera_path.bl_idname, icon="CON_FOLLOWPATH")
    busy = jobs.ACTIVE is not None and not jobs.ACTIVE.finished
    col.prop(settings, "from_mesh")
    row = col.row(align=True)
    row.enabled = not busy
    row.operator(SHARP_OT_render_preview.bl_idname, icon="RENDER_ANIMATION")
    row.operator(SHARP_OT_render_preview_frame.bl_idname, text="Frame", icon="RENDER_STILL")
    scene = context.scene
    col.label(text=f"Frames {scene.frame_start}-{scene.frame_end}, camera: {getattr(scene.camera, 'name', 'none')}")


CLASSES: tuple[type, ...] = (
    SHARP_PreviewSettings,
    SHARP_OT_add_camera_path,
    SHARP_OT_render_preview,
    SHARP_OT_render_preview_frame,
)


def register() -> None:
    bpy.types.Scene.sharp_preview = bpy.props.PointerProperty(type=SHARP_PreviewSettings)  # type: ignore[attr-defined]
    if draw_preview not in ui.PREVIEW_DRAW_HOOKS:
        ui.PREVIEW_DRAW_HOOKS.append(draw_preview)


def unregister() -> None:
    if draw_preview in ui.PREVIEW_DRAW_HOOKS:
        ui.PREVIEW_DRAW_HOOKS.remove(draw_preview)
    del bpy.types.Scene.sharp_preview  # type: ignore[attr-defined]
