"""sharp_blender: turn one photograph into a metric 3D Gaussian scene with SHARP, inside Blender.

Only ``register()``/``unregister()`` live here. bpy is imported lazily so that the pure modules of
this package (``conventions``, ``ply``, ``protocol``, ``placement``, ...) import without Blender.
"""

from __future__ import annotations

_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    from . import addon

    addon.register()
    _registered = True


def unregister() -> None:
    global _registered
    if not _registered:
        return
    from . import addon

    addon.unregister()
    _registered = False
