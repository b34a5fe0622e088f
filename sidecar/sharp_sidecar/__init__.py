"""sharp_sidecar: the torch side of sharp_blender (SHARP predictor, PLY, renderer, JSON-lines server).

Data path: imageio -> model -> gaussians -> ply -> render -> server/cli. The subpackage ``io``
(``conventions``, ``protocol``, ``ply``, ``atomic``, ``trajectory``) is built from the add-on's
``sharp_blender/io/`` folder (see ``sidecar/setup.py``), so both sides share one definition of each convention.
"""

__version__ = "0.1.0"
