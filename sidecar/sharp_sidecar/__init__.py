"""sharp_sidecar: the torch side of sharp_blender (SHARP predictor, PLY, renderer, JSON-lines server).

Data path: imageio -> model -> gaussians -> ply -> render -> server/cli. The modules ``conventions``,
``protocol``, ``ply``, ``atomic`` and ``trajectory`` are links to the add-on's pure modules, so both
sides share one definition of each convention.
"""

__version__ = "0.1.0"
