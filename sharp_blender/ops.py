"""Thin operators: read properties, call jobs/importer/exporter, turn errors into reports."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import bpy
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import exporter, importer, jobs, native_cloud, prefs, props

logger = logging.getLogger(__name__)

TIMER_S = 0.1


class SHARP_OT_predict(bpy.types.Operator):
    """Turn a photo (or several) into 3D Gaussians with the SHARP sidecar"""

    bl_idname = "sharp.predict"
    bl_label = "Generate from Photo"
    # No REGISTER: a redo panel would re-run the whole prediction on every tweak.
    bl_options = {"UNDO"}  # noqa: RUF012

    filepath: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Photo", description="Photo file, or a folder of photos", subtype="FILE_PATH", default=""
    )
    directory: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Folder", description="Folder of a multi-file selection", subtype="DIR_PATH", options={"HIDDEN"}
    )
    files: bpy.props.CollectionProperty(  # type: ignore[valid-type]
        name="Files", description="Photos selected in the file browser", type=bpy.types.OperatorFileListElement
    )
    filter_image: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    focal_mm: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Focal Length",
        description="35 mm-equivalent focal length; 0 reads it from EXIF",
        min=0.0,
        max=2000.0,
        default=0.0,
    )
    device: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Device", description="Where the model runs", items=props.DEVICE_ITEMS, default="PREFS"
    )
    placement: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Placement", description="Where the camera and splats go", items=importer.PLACEMENTS, default="ORIGIN"
    )
    wait: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Wait",
        description="Block until done (always on in background mode, where there is no event loop)",
        default=False,
        options={"SKIP_SAVE"},
    )

    _run: jobs.PredictRun | None = None
    _timer: Any = None

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if not self.filepath and not self.files:
            context.window_manager.fileselect_add(self)
            return {"RUNNING_MODAL"}
        return self.execute(context)

    def _make_run(self, context: bpy.types.Context) -> jobs.PredictRun:
        names = [f.name for f in self.files if f.name]
        images, skipped = jobs.collect_photos(self.filepath, self.directory, names)
        options = jobs.predict_options(context, self.focal_mm, self.device)
        return jobs.PredictRun(images, options, self.placement, prefs.get(context).ply_dir(), skipped=skipped)

    def execute(self, context: bpy.types.Context) -> set[str]:
        if jobs.ACTIVE is not None and not jobs.ACTIVE.finished:
            self.report({"ERROR"}, "a SHARP job is already running: wait for it or cancel it")
            return {"CANCELLED"}
        try:
            run = self._make_run(context)
            if bpy.app.background or self.wait:
                run.run_blocking(context)
                return self._report(run)
            run.start(context)
        except Exception as exc:  # the operator's boundary: every failure is a message in the panel
            return self._fail(context, jobs.describe(exc))
        jobs.ACTIVE = self._run = run
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_S, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        jobs.update_status(context, run)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        run = self._run
        assert run is not None
        if event.type == "ESC" and event.value == "PRESS":
            run.cancel()
        if event.type != "TIMER" and not run.cancelled:
            return {"PASS_THROUGH"}
        try:
            done = run.poll(context)
        except Exception as exc:  # never leave the modal operator (and ACTIVE) stuck on an error
            run.cancel()
            run.cancelled, done = True, True
            self.report({"ERROR"}, jobs.describe(exc))
        wm = context.window_manager
        wm.progress_update(int(wm.sharp_status.progress * 100))  # type: ignore[attr-defined]
        if context.workspace is not None:
            context.workspace.status_text_set(None if done else f"SHARP: {wm.sharp_status.stage}  (Esc to cancel)")  # type: ignore[attr-defined]
        for area in context.screen.areas if context.screen else ():
            if area.type == "VIEW_3D":
                area.tag_redraw()
        if not done:
            return {"RUNNING_MODAL"}
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        jobs.ACTIVE = None
        return self._report(run)

    def _report(self, run: jobs.PredictRun) -> set[str]:
        made, errors = run.summary()
        for result in run.results:
            for warning in result.warnings:
                self.report({"WARNING"}, f"{jobs.display_name(result.image.name)}: {warning}")
        for error in errors:
            self.report({"ERROR"} if not made else {"WARNING"}, error)
        if made:
            self.report({"INFO"}, f"SHARP made {', '.join(made)}")
            return {"FINISHED"}
        return {"CANCELLED"}

    def _fail(self, context: bpy.types.Context, message: str) -> set[str]:
        status = getattr(context.window_manager, "sharp_status", None)
        if status is not None:
            status.busy, status.error, status.message = False, message, ""
        self.report({"ERROR"}, message)
        return {"CANCELLED"}


class SHARP_OT_cancel(bpy.types.Operator):
    """Stop the running SHARP job"""

    bl_idname = "sharp.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return jobs.ACTIVE is not None and not jobs.ACTIVE.finished

    def execute(self, context: bpy.types.Context) -> set[str]:
        if jobs.ACTIVE is not None:
            jobs.ACTIVE.cancel()
        return {"FINISHED"}


class SHARP_OT_import_ply(bpy.types.Operator, ImportHelper):
    """Import a 3D Gaussian splat PLY (SHARP's or any 3DGS) without running the model"""

    bl_idname = "sharp.import_ply"
    bl_label = "Import Gaussian Splat PLY"
    bl_options = {"REGISTER", "UNDO", "PRESET"}  # noqa: RUF012

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply", options={"HIDDEN"})  # type: ignore[valid-type]
    directory: bpy.props.StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    files: bpy.props.CollectionProperty(  # type: ignore[valid-type]
        type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"}
    )
    placement: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Placement", description="Where the camera and splats go", items=importer.PLACEMENTS, default="ORIGIN"
    )
    camera: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Camera", description="Create the source camera when the PLY stores its intrinsics", default=True
    )
    display: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Display",
        description="How the splats are drawn (Gaussians need Blender 5.3 or later; the default where available)",
        items=(
            ("AUTO", "Automatic", "Gaussians where this Blender draws them, else points"),
            *native_cloud.DISPLAY_ITEMS,
        ),
        default="AUTO",
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        names = [f.name for f in self.files if f.name]
        paths = [Path(self.directory) / n for n in names] if names and self.directory else [Path(self.filepath)]
        made, failed = [], []
        display_mode = None if self.display == "AUTO" else self.display
        for path in paths:  # one bad file is reported and skipped; the others still import
            try:
                result = importer.import_ply(
                    context, path, self.placement, make_camera=self.camera, display_mode=display_mode
                )
            except Exception as exc:  # the operator's boundary (the importer removed what it made)
                text = jobs.describe(exc)
                name = jobs.display_name(path)
                failed.append(text if name in text or str(path) in text else f"{name}: {text}")
                continue
            made.append(result.splat.name)
            for warning in getattr(result, "warnings", ()):
                self.report({"WARNING"}, f"{result.splat.name}: {warning}")
            self.report({"INFO"}, f"imported {result.splat.name} ({importer.splat_count(result.splat):,} splats)")
        for text in failed:
            self.report({"ERROR"} if not made else {"WARNING"}, text)
        if failed and len(paths) > 1:
            self.report({"ERROR"} if not made else {"WARNING"}, f"{len(failed)} of {len(paths)} PLYs failed")
        return {"FINISHED"} if made else {"CANCELLED"}


class SHARP_OT_export_ply(bpy.types.Operator, ExportHelper):
    """Write the active splat object as a 3DGS PLY in the file's own axes, with its transform baked in"""

    bl_idname = "sharp.export_ply"
    bl_label = "Export Gaussian Splat PLY"

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply", options={"HIDDEN"})  # type: ignore[valid-type]
    apply_transform: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Apply Transform",
        description=(
            "Bake the object's move, rotation and uniform scale since import into the splats, in the PLY's own "
            "axes (an untouched import writes the numbers it read)"
        ),
        default=True,
    )
    plain: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Plain PLY",
        description="Only the standard 3DGS vertex properties, no SHARP metadata (for tools such as gsply)",
        default=False,
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return exporter.can_export(context.active_object)

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = context.active_object
        assert obj is not None
        try:
            count = exporter.export_ply(obj, self.filepath, self.apply_transform, self.plain)
        except Exception as exc:  # the operator's boundary; the writer leaves no partial file
            self.report({"ERROR"}, jobs.describe(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"wrote {count:,} splats to {self.filepath}")
        return {"FINISHED"}


class SHARP_OT_set_display(bpy.types.Operator):
    """Draw the active splat object as native Gaussians (Blender 5.3+) or as points (one sphere per splat)"""

    bl_idname = "sharp.set_display"
    bl_label = "Splat Display"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    mode: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Display", description="How the splats are drawn", items=native_cloud.DISPLAY_ITEMS
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return importer.is_splat_object(context.active_object)

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = context.active_object
        try:
            native_cloud.set_display(context, obj, self.mode, importer.stored_color_space(obj.data))
        except (ValueError, RuntimeError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class SHARP_OT_check_sidecar(bpy.types.Operator):
    """Start the sidecar and show its version and device"""

    bl_idname = "sharp.check_sidecar"
    bl_label = "Check Sidecar"

    def execute(self, context: bpy.types.Context) -> set[str]:
        prefs.LAST_CHECK.clear()
        try:
            status = jobs.get_client(context).status(timeout=120)
        except Exception as exc:
            text = jobs.describe(exc)
            prefs.LAST_CHECK["Error"] = text.splitlines()[0]
            self.report({"ERROR"}, text)
            return {"CANCELLED"}
        for key in ("version", "torch", "device", "model_loaded"):
            prefs.LAST_CHECK[key.replace("_", " ").capitalize()] = str(status.get(key))
        self.report({"INFO"}, ", ".join(f"{k}: {v}" for k, v in prefs.LAST_CHECK.items()))
        return {"FINISHED"}


CLASSES: tuple[type, ...] = (
    SHARP_OT_predict,
    SHARP_OT_cancel,
    SHARP_OT_import_ply,
    SHARP_OT_export_ply,
    SHARP_OT_set_display,
    SHARP_OT_check_sidecar,
)

if hasattr(bpy.types, "FileHandler"):  # 4.1+: drag a .ply onto the 3D viewport

    class SHARP_FH_import_ply(bpy.types.FileHandler):
        bl_idname = "SHARP_FH_import_ply"
        bl_label = "Gaussian Splats (SHARP)"
        bl_import_operator = "sharp.import_ply"
        bl_file_extensions = ".ply"

        @classmethod
        def poll_drop(cls, context: bpy.types.Context) -> bool:
            return context.area is not None and context.area.type == "VIEW_3D"

    CLASSES = (*CLASSES, SHARP_FH_import_ply)
