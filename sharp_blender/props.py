"""Scene settings of the Generate panel (``Scene.sharp``) and the job status (``WindowManager.sharp_status``)."""

from __future__ import annotations

import bpy

from . import importer, prefs

DEVICE_ITEMS = (("PREFS", "Preferences", "Use the device set in the add-on preferences"), *prefs.DEVICES)


class SHARP_SceneSettings(bpy.types.PropertyGroup):
    filepath: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Photo",
        description="The photo (or a folder of photos) to turn into 3D Gaussians",
        subtype="FILE_PATH",
        default="",
    )
    focal_mm: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Focal Length",
        description="35 mm-equivalent focal length; 0 reads it from the photo's EXIF (30 mm if absent)",
        min=0.0,
        max=2000.0,
        default=0.0,
        unit="CAMERA",
    )
    device: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Device",
        description="Where the model runs for this scene",
        items=DEVICE_ITEMS,
        default="PREFS",
    )
    placement: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Placement",
        description="Where the new camera and splats go",
        items=importer.PLACEMENTS,
        default="ORIGIN",
    )


class SHARP_Status(bpy.types.PropertyGroup):
    """Runtime state of the running job, shown in the panel (not saved in .blend files)."""

    busy: bpy.props.BoolProperty(name="Busy", description="A SHARP job is running")  # type: ignore[valid-type]
    stage: bpy.props.StringProperty(name="Stage", description="What the sidecar is doing")  # type: ignore[valid-type]
    progress: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Progress", description="Progress of the whole job", min=0.0, max=1.0, subtype="FACTOR"
    )
    error: bpy.props.StringProperty(name="Error", description="The last job's error")  # type: ignore[valid-type]
    message: bpy.props.StringProperty(name="Result", description="The last job's result")  # type: ignore[valid-type]


CLASSES = (SHARP_SceneSettings, SHARP_Status)


def register() -> None:
    bpy.types.Scene.sharp = bpy.props.PointerProperty(type=SHARP_SceneSettings)  # type: ignore[attr-defined]
    bpy.types.WindowManager.sharp_status = bpy.props.PointerProperty(type=SHARP_Status)  # type: ignore[attr-defined]


def unregister() -> None:
    del bpy.types.WindowManager.sharp_status  # type: ignore[attr-defined]
    del bpy.types.Scene.sharp  # type: ignore[attr-defined]
