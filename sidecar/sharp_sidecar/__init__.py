"""sharp_sidecar: the torch side of sharp_blender (SHARP predictor, PLY, renderer, JSON-lines server).

Laid out as its data path, each package importing only the ones above it:
``io`` (shared with the add-on: PLY, protocol, conventions, camera paths, atomic writes) and ``errors``
-> ``image`` (photo decoding) -> ``model`` (the network) and ``checkpoint`` (finding and loading weights)
-> ``gaussians`` (network output -> metric Gaussians, precision, fast path) -> ``render`` (previews)
-> ``cli`` (the ``sharp`` commands) and ``serve`` (``sharp serve``). The subpackage ``io`` is built from
the add-on's ``sharp_blender/io/`` folder (see ``sidecar/setup.py``), so both sides share one definition
of each convention.
"""

__version__ = "0.1.0"
