"""The SHARP runtime: the sidecar's own Python environment, made from inside Blender.

``plan`` (which torch for this machine, the pip command lines, venv paths) and ``installer`` (the steps,
their log, cancelling, the ready marker) are bpy-free and tested by plain pytest; ``scripts/setup.sh``
uses ``plan`` too. ``ops`` is the bpy glue: the preferences section and its operators.
Nothing is imported here, so ``python -m sharp_blender.runtime.plan`` works without Blender.
"""
