"""The bpy-free code shared by the add-on and the sidecar: PLY, protocol, conventions, camera paths, atomic writes.

This folder is the one source of these modules. The add-on imports it as ``sharp_blender.io``; the sidecar's
build (``sidecar/setup.py``) ships the same files as ``sharp_sidecar.io``. Modules here import only the
standard library, numpy, and each other (relatively), never bpy or torch at module level.
"""
