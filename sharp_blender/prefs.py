"""Add-on preferences: where the sidecar lives, the device, the checkpoint, where PLYs go.

For tests and custom setups, ``sidecar_command`` replaces the whole sidecar command line, e.g.
``/path/to/python /path/to/tests/fake_sidecar.py`` (split like a shell would, see :func:`shlex.split`).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import bpy

from . import client
from .runtime import ops as runtime_ops
from .userdir import package, user_dir

CHECKPOINT_NAME = "sharp_2572gikvuh.pt"
DEVICES = (
    ("auto", "Auto", "CUDA, then Apple MPS, then CPU"),
    ("cuda", "CUDA", "NVIDIA GPU"),
    ("mps", "MPS", "Apple GPU"),
    ("cpu", "CPU", "Slow but always available"),
)

# The last "Check Sidecar" answer, shown in the preferences (runtime only).
LAST_CHECK: dict[str, str] = {}


def get(context: bpy.types.Context | None = None) -> SHARP_AddonPreferences:
    context = context or bpy.context
    addon = context.preferences.addons.get(package())
    if addon is None or addon.preferences is None:
        raise RuntimeError("the SHARP add-on is not enabled")
    return addon.preferences  # type: ignore[return-value]


class SHARP_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__  # type: ignore[assignment]

    python_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Sidecar Python",
        description="Python of the SHARP sidecar environment; empty: the installed SHARP Runtime, else the one scripts/setup.sh made",
        subtype="FILE_PATH",
        default="",
    )
    sidecar_command: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Custom Command",
        description="Advanced: a full command line that replaces 'python -m sharp_sidecar serve' (tests use a fake)",
        default="",
    )
    device: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Device",
        description="Where the sidecar runs the model",
        items=DEVICES,
        default="auto",
    )
    checkpoint_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Checkpoint",
        description="SHARP weights (.pt); empty: models/ in the extension's user folder, else the sidecar's torch hub cache (downloaded there on first use when online access is allowed)",
        subtype="FILE_PATH",
        default="",
    )
    output_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="PLY Folder",
        description="Where generated PLY files are written; empty uses the extension's user folder",
        subtype="DIR_PATH",
        default="",
    )
    runtime: bpy.props.PointerProperty(type=runtime_ops.SETTINGS)  # type: ignore[valid-type]
    keep_model: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Keep Model Loaded",
        description="Keep the model in (GPU) memory between photos; off frees it after each job",
        default=True,
    )
    prestart: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Pre-start",
        description="Start the sidecar and load the model before the first Generate, so the click finds it warm",
        items=(
            ("AUTO", "Auto", "At file load once a CUDA GPU has been seen here, else when the SHARP panel is drawn"),
            ("PANEL", "Panel Opened", "When the SHARP panel is first drawn"),
            ("FILE_LOAD", "File Load", "When a .blend file is loaded (and when the SHARP panel is drawn)"),
            ("OFF", "Off", "Load the model with the first photo (for machines with little VRAM)"),
        ),
        default="AUTO",
    )

    def python(self) -> Path:
        if self.python_path:
            return Path(bpy.path.abspath(self.python_path))
        return runtime_ops.ready_python() or client.default_sidecar_python()

    def command(self) -> list[str]:
        """The sidecar's argv. Raises RuntimeError when no sidecar Python is found."""
        if self.sidecar_command.strip():
            return shlex.split(self.sidecar_command)
        python = self.python()
        if not python.is_file():
            raise RuntimeError(
                f"no sidecar Python at {python}. Press 'Install SHARP Runtime' in the add-on preferences "
                "(or run scripts/setup.sh from the sharp_blender repository, or set 'Sidecar Python')"
            )
        return client.sidecar_command(python)

    def checkpoint(self) -> Path:
        if self.checkpoint_path:
            return Path(bpy.path.abspath(self.checkpoint_path))
        return user_dir("models") / CHECKPOINT_NAME

    def ply_dir(self) -> Path:
        if self.output_dir:
            path = Path(bpy.path.abspath(self.output_dir))
            path.mkdir(parents=True, exist_ok=True)
            return path
        return user_dir("ply")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        runtime_ops.draw(layout, self.runtime)
        col = layout.column()
        row = col.row()
        row.prop(self, "python_path")
        if not self.python_path:
            col.label(text=f"Found automatically: {self.python()}", icon="INFO")
        col.prop(self, "device")
        col.prop(self, "checkpoint_path")
        col.prop(self, "output_dir")
        col.prop(self, "keep_model")
        col.prop(self, "prestart")
        col.prop(self, "sidecar_command")
        row = layout.row()
        row.operator("sharp.check_sidecar", icon="CHECKMARK")
        for key, value in LAST_CHECK.items():
            layout.label(text=f"{key}: {value}")


CLASSES = (runtime_ops.SETTINGS, SHARP_AddonPreferences)
