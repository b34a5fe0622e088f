"""Add-on preferences (placeholder until the add-on issue fills them in)."""

from __future__ import annotations

import bpy


class SHARP_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__  # type: ignore[assignment]

    device: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Device",
        description="Where the sidecar runs the model",
        items=(
            ("auto", "Auto", "CUDA, then Apple MPS, then CPU"),
            ("cuda", "CUDA", "NVIDIA GPU"),
            ("mps", "MPS", "Apple GPU"),
            ("cpu", "CPU", "Slow but always available"),
        ),
        default="auto",
    )

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.prop(self, "device")


CLASSES = (SHARP_AddonPreferences,)
