"""Preferences -> Install SHARP Runtime: its settings, its operators and its part of the preferences.

The install runs in a thread (:class:`.installer.Installer`); a timer drains its event queue into
:data:`STATE` and redraws the preferences. Timers never fire in background mode, so there (and with
``wait=True``) the operator installs synchronously, as ``sharp.predict`` does.
"""

from __future__ import annotations

import os
import queue
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bpy

from ..userdir import package, user_dir
from . import installer, plan
from .failures import InstallError
from .layout import Layout, read_ready, remove_runtime
from .layout import ready_python as _ready_python

# The add-on package's own folder: the zip puts the sidecar's source beside the add-on's files.
EXTENSION_DIR = Path(__file__).resolve().parent.parent
TIMER_S = 0.25
SHOWN_TAIL = 8


class _State:
    """The install in progress or the last one's outcome (runtime only, like prefs.LAST_CHECK)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.installer: installer.Installer | None = None
        self.events: queue.Queue[installer.Event] = queue.Queue()
        self.fraction = 0.0
        self.message = ""
        self.error = ""
        self.tail = ""
        self.log: Path | None = None

    @property
    def busy(self) -> bool:
        return self.installer is not None

    def cancel(self) -> None:
        if self.installer is not None:
            self.installer.cancel()

    def drain(self) -> bool:
        """Apply queued events; True once the install has ended (done or failed)."""
        ended = False
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return ended
            self.fraction = event.fraction
            if event.kind == "progress":
                self.message = event.message
            elif event.kind == "done":
                self.message, self.error, self.tail = event.message, "", ""
                ended = True
            elif event.kind == "failed" and event.error is not None:
                self.message, self.error, self.tail = "", event.error.message, event.error.tail
                ended = True


STATE = _State()


def sidecar_source() -> Path:
    """The sidecar's source tree: beside the add-on in the zip, or the repository's sidecar/ in a checkout."""
    for candidate in (EXTENSION_DIR / "sidecar", EXTENSION_DIR.parent / "sidecar"):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return EXTENSION_DIR / "sidecar"


def runtime_root() -> Path:
    return user_dir() / "runtime"


def ready_info() -> dict[str, Any] | None:
    return read_ready(runtime_root())


def ready_python() -> Path | None:
    """The runtime's interpreter when an install finished (the sidecar-python discovery uses it first)."""
    return _ready_python(runtime_root())


def online_access() -> bool:
    return bool(getattr(bpy.app, "online_access", True))


def options(settings: SHARP_RuntimeSettings) -> installer.Options:
    env_torch, env_index = plan.torch_settings(os.environ)
    wheels = bpy.path.abspath(settings.wheels_dir) if settings.wheels_dir.strip() else ""
    return installer.Options(
        root=runtime_root(),
        sidecar_dir=sidecar_source(),
        base_python=Path(bpy.path.abspath(settings.python_path) if settings.python_path else sys.executable),
        online=online_access(),
        wheels_dir=Path(wheels) if wheels else None,
        torch_requirement=settings.torch_requirement.strip() or env_torch,
        torch_index=settings.torch_index.strip() or env_index,
    )


def _redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


def _tick() -> float | None:
    ended = STATE.drain()
    _redraw()
    if not ended:
        return TIMER_S
    _finish()
    return None


def _finish() -> None:
    STATE.installer = None


def shutdown() -> None:
    """Add-on disabled or Blender quitting: stop an install in progress (it stays 'not ready')."""
    STATE.cancel()
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    STATE.installer = None


# How to stop the add-on's running sidecar, set by addon.register(): pip must not replace packages under
# it (the next job starts the new one). A hook, not an import, because jobs reads the preferences,
# which import this module.
STOP_SIDECAR: list[Callable[[], None]] = []


def _stop_sidecar() -> None:
    for stop in STOP_SIDECAR:
        stop()


def begin(opts: installer.Options) -> installer.Installer:
    """A new install, shown by the preferences from now on (the running sidecar is stopped first)."""
    _stop_sidecar()
    STATE.reset()
    job = installer.Installer(opts, STATE.events)
    STATE.installer, STATE.log = job, job.layout.log
    return job


def start_in_background(job: installer.Installer) -> None:
    """The UI's path: the install in a thread, its events drained by a timer (:func:`_tick`)."""
    job.start()
    bpy.app.timers.register(_tick, first_interval=TIMER_S)


class SHARP_RuntimeSettings(bpy.types.PropertyGroup):
    python_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Runtime Python",
        description="Python 3.10+ that makes the runtime's environment; empty uses Blender's own Python",
        subtype="FILE_PATH",
        default="",
    )
    wheels_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Offline Wheels",
        description="A folder of wheels (torch, the sidecar's dependencies) to install from without internet access",
        subtype="DIR_PATH",
        default="",
    )
    torch_requirement: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Torch Requirement",
        description=f"pip requirement for torch, e.g. torch==2.13.0; empty: ${plan.TORCH_ENV}, else {plan.DEFAULT_TORCH}",
        default="",
    )
    torch_index: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Torch Wheel Index",
        description=(
            "Index URL for the torch step, e.g. PyTorch's CUDA wheel index (Windows) or CPU wheel index (Linux); "
            f"empty: ${plan.INDEX_ENV}, else pip's default index"
        ),
        default="",
    )


class SHARP_OT_install_runtime(bpy.types.Operator):
    """Create (or repair/update) the SHARP runtime: a Python environment with torch and the sidecar"""

    bl_idname = "sharp.install_runtime"
    bl_label = "Install SHARP Runtime"

    wait: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Wait",
        description="Block until done (always on in background mode, where timers do not run)",
        default=False,
        options={"SKIP_SAVE"},
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        if STATE.busy:
            self.report({"WARNING"}, "the SHARP runtime is already being installed")
            return {"CANCELLED"}
        job = begin(options(context.preferences.addons[package()].preferences.runtime))
        if not (bpy.app.background or self.wait):
            start_in_background(job)
            self.report({"INFO"}, f"installing the SHARP runtime (log: {job.layout.log})")
            return {"FINISHED"}
        try:
            job.run()
        except InstallError as exc:
            STATE.drain()
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        finally:
            _finish()
        STATE.drain()
        info = ready_info() or {}
        self.report({"INFO"}, f"SHARP runtime ready: {_summary(info)}")
        return {"FINISHED"}


class SHARP_OT_cancel_runtime_install(bpy.types.Operator):
    """Stop the runtime install; nothing is marked ready"""

    bl_idname = "sharp.cancel_runtime_install"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return STATE.busy

    def execute(self, context: bpy.types.Context) -> set[str]:
        STATE.cancel()
        return {"FINISHED"}


class SHARP_OT_remove_runtime(bpy.types.Operator):
    """Delete the SHARP runtime (its environment, marker and log) from the extension's user folder"""

    bl_idname = "sharp.remove_runtime"
    bl_label = "Remove Runtime"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if STATE.busy:
            self.report({"WARNING"}, "cancel the install first")
            return {"CANCELLED"}
        _stop_sidecar()
        root = runtime_root()
        try:
            remove_runtime(root)
        except OSError as exc:
            self.report({"ERROR"}, f"could not remove {root}: {exc}")
            return {"CANCELLED"}
        STATE.reset()
        self.report({"INFO"}, f"removed the SHARP runtime ({root})")
        return {"FINISHED"}


def _summary(info: dict[str, Any]) -> str:
    return f"sharp {info.get('version')}, torch {info.get('torch')}, device {info.get('device')}"


def _wrapped(layout: bpy.types.UILayout, text: str, icon: str = "NONE", width: int = 110) -> None:
    import textwrap

    for i, line in enumerate(textwrap.wrap(text, width) or [""]):
        layout.label(text=line, icon=icon if i == 0 else "BLANK1")


def draw(layout: bpy.types.UILayout, settings: SHARP_RuntimeSettings) -> None:
    """The preferences' runtime section."""
    box = layout.box()
    box.label(text="SHARP Runtime (torch and the sidecar)", icon="CONSOLE")
    info = ready_info()
    if STATE.busy:
        if hasattr(box, "progress"):  # Blender 4.0+
            box.progress(factor=STATE.fraction, type="BAR", text=STATE.message or "installing")
        else:
            box.label(text=f"{STATE.fraction:.0%} {STATE.message}")
        box.operator(SHARP_OT_cancel_runtime_install.bl_idname, icon="CANCEL")
    elif info:
        box.label(text=f"Ready: {_summary(info)}", icon="CHECKMARK")
        if info.get("note"):
            _wrapped(box, f"Note: {info['note']}", icon="INFO")
    else:
        box.label(text="Not installed: the add-on needs it to generate splats", icon="ERROR")
    if STATE.error:
        _wrapped(box, STATE.error, icon="CANCEL")
        for line in STATE.tail.splitlines()[-SHOWN_TAIL:]:
            box.label(text=line)
    if not STATE.busy:
        row = box.row()
        row.operator(
            SHARP_OT_install_runtime.bl_idname,
            text="Repair / Update Runtime" if info else "Install SHARP Runtime",
            icon="IMPORT",
        )
        sub = row.row()
        sub.enabled = runtime_root().exists()
        sub.operator(SHARP_OT_remove_runtime.bl_idname, icon="TRASH")
    if not online_access():
        _wrapped(box, "Online access is off (Preferences > System): pick a folder of Offline Wheels", icon="INFO")
    log = STATE.log or Layout(runtime_root()).log
    if log.is_file():
        box.label(text=f"Log: {log}", icon="TEXT")
    col = box.column()
    col.prop(settings, "python_path")
    col.prop(settings, "wheels_dir")
    col.prop(settings, "torch_requirement")
    col.prop(settings, "torch_index")


SETTINGS = SHARP_RuntimeSettings
CLASSES: tuple[type, ...] = (SHARP_OT_install_runtime, SHARP_OT_cancel_runtime_install, SHARP_OT_remove_runtime)
