"""Compressed 3DGS PLYs -> the plain 3DGS vertex layout, in numpy. No bpy.

The chunked layout of PlayCanvas SuperSplat / splat-transform (``.compressed.ply``), which gsplat's
``export_splats(format="ply_compressed")`` writes too:

- ``element chunk ceil(N/256)``: float ``min_x min_y min_z max_x max_y max_z``, ``min_scale_x..z``,
  ``max_scale_x..z`` and, in newer files (and gsplat's), ``min_r min_g min_b max_r max_g max_b``.
- ``element vertex N``: uint ``packed_position packed_rotation packed_scale packed_color``; splat i
  belongs to chunk ``i // 256``.
  - position and log-scale: 11/10/11 bits (x in the top bits), each a fraction between the chunk's
    min and max;
  - colour: 8 bits each of r, g, b (between the chunk's colour bounds when present, else 0..1) and
    sigmoid(opacity), from the top byte down; ``f_dc = (rgb − 0.5) / C0``;
  - rotation: "smallest three": the top 2 bits name the largest of ``rot_0..3``, the other three follow
    in order, 10 bits each, as ``v / √2 + 0.5``; the largest is recovered as ``√(1 − a² − b² − c²)``.
- optional ``element sh N``: uchar ``f_rest_*`` (9, 24 or 45; gsplat may declare none), each
  ``(q + 0.5) / 256`` (0 -> 0, 255 -> 1) mapped to ``(n − 0.5) · 8``.
"""

from __future__ import annotations

import math

import numpy as np

from . import ply
from .conventions import SH_C0

CHUNK_SIZE = 256
CHUNK_BOUNDS = tuple(f"{side}_{axis}" for side in ("min", "max") for axis in ("x", "y", "z")) + tuple(
    f"{side}_scale_{axis}" for side in ("min", "max") for axis in ("x", "y", "z")
)
CHUNK_COLOURS = tuple(f"{side}_{c}" for side in ("min", "max") for c in ("r", "g", "b"))
PACKED = ("packed_position", "packed_rotation", "packed_scale", "packed_color")
# Opacity is stored as sigmoid in 8 bits; 0 and 255 would decode to ±inf logits.
_ALPHA_LIMIT = 1e-7


def is_compressed(contents: ply.PlyContents) -> bool:
    """True when the vertex element holds the four packed uint32 properties."""
    names = contents.vertex.dtype.names or ()
    return all(name in names for name in PACKED)


def _check(contents: ply.PlyContents) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    path = contents.path
    vertex = contents.vertex
    for name in PACKED:
        if vertex.dtype[name] != np.dtype("u4"):
            raise ply.PlyError(f"{path}: compressed PLY property {name} is {vertex.dtype[name]}, not uint32")
    chunk = contents.elements.get("chunk")
    if chunk is None:
        raise ply.PlyError(f"{path}: a compressed PLY (packed_* properties) without its 'chunk' element")
    missing = [name for name in CHUNK_BOUNDS if name not in (chunk.dtype.names or ())]
    if missing:
        raise ply.PlyError(f"{path}: the compressed PLY's chunk element lacks {', '.join(missing)}")
    expected = math.ceil(len(vertex) / CHUNK_SIZE)
    if len(chunk) != expected:
        raise ply.PlyError(
            f"{path}: {len(vertex)} splats need {expected} chunks of {CHUNK_SIZE}, but the file has {len(chunk)}; "
            "the compressed PLY is damaged or uses another chunk size"
        )
    sh = contents.elements.get("sh")
    if sh is not None:
        names = sh.dtype.names or ()
        # gsplat writes an sh element with no properties when there are no bands: its row count says nothing
        if names and (len(sh) != len(vertex) or len(names) not in (9, 24, 45)):
            raise ply.PlyError(
                f"{path}: the compressed PLY's sh element has {len(sh)} rows of {len(names)} values; "
                f"expected {len(vertex)} rows of 9, 24 or 45 f_rest values"
            )
        if any(sh.dtype[n] != np.dtype("u1") for n in names):
            raise ply.PlyError(f"{path}: the compressed PLY's sh values are not uchar")
        if not names:
            sh = None
    return vertex, chunk, sh


def _unorm(packed: np.ndarray, shift: int, bits: int) -> np.ndarray:
    return ((packed >> np.uint32(shift)) & np.uint32((1 << bits) - 1)).astype(np.float32) / np.float32((1 << bits) - 1)


def _lerp(chunk: np.ndarray, low: str, high: str, index: np.ndarray, t: np.ndarray) -> np.ndarray:
    a = chunk[low].astype(np.float32)[index]
    b = chunk[high].astype(np.float32)[index]
    return a * (1 - t) + b * t


def decompress(contents: ply.PlyContents) -> np.ndarray:
    """The splats of a compressed PLY as a structured float32 vertex array in the 3DGS layout.

    Raises:
        ply.PlyError: the chunk, vertex or sh elements do not fit together; the message says how.
    """
    vertex, chunk, sh = _check(contents)
    n = len(vertex)
    index = np.arange(n) // CHUNK_SIZE
    columns: dict[str, np.ndarray] = {}
    position, scale = vertex["packed_position"], vertex["packed_scale"]
    for axis, (shift, bits) in zip("xyz", ((21, 11), (11, 10), (0, 11)), strict=True):
        columns[axis] = _lerp(chunk, f"min_{axis}", f"max_{axis}", index, _unorm(position, shift, bits))
    colour = vertex["packed_color"]
    has_colour_bounds = all(name in (chunk.dtype.names or ()) for name in CHUNK_COLOURS)
    for i, (c, shift) in enumerate(zip("rgb", (24, 16, 8), strict=True)):
        t = _unorm(colour, shift, 8)
        rgb = _lerp(chunk, f"min_{c}", f"max_{c}", index, t) if has_colour_bounds else t
        columns[f"f_dc_{i}"] = (rgb - np.float32(0.5)) / np.float32(SH_C0)
    if sh is not None:
        for name in sh.dtype.names or ():
            q = sh[name].astype(np.float32)
            unit = np.where(q == 0, 0.0, np.where(q == 255, 1.0, (q + 0.5) / 256)).astype(np.float32)
            columns[name] = (unit - np.float32(0.5)) * np.float32(8)
    alpha = np.clip(_unorm(colour, 0, 8).astype(np.float64), _ALPHA_LIMIT, 1 - _ALPHA_LIMIT)
    columns["opacity"] = np.log(alpha / (1 - alpha)).astype(np.float32)
    for i, (axis, (shift, bits)) in enumerate(zip("xyz", ((21, 11), (11, 10), (0, 11)), strict=True)):
        columns[f"scale_{i}"] = _lerp(
            chunk, f"min_scale_{axis}", f"max_scale_{axis}", index, _unorm(scale, shift, bits)
        )
    columns.update(zip(("rot_0", "rot_1", "rot_2", "rot_3"), _rotations(vertex["packed_rotation"]).T, strict=True))
    order = [*ply.SHARP_VERTEX_PROPERTIES[:6], *(sh.dtype.names or () if sh is not None else ())]
    order += list(ply.SHARP_VERTEX_PROPERTIES[6:])
    return ply.structured({name: np.ascontiguousarray(columns[name], dtype=np.float32) for name in order})


def _rotations(packed: np.ndarray) -> np.ndarray:
    """Smallest-three packed quaternions -> (N, 4) in rot_0..3 order."""
    n = len(packed)
    small = np.stack([(_unorm(packed, shift, 10) - 0.5) * np.float32(math.sqrt(2)) for shift in (20, 10, 0)], axis=1)
    largest = np.sqrt(np.clip(1 - np.sum(small * small, axis=1), 0, None))
    which = (packed >> np.uint32(30)).astype(np.intp)
    out = np.empty((n, 4), dtype=np.float32)
    # Slot j of the output takes the largest when j == which, else small[:, j - (j > which)].
    for j in range(4):
        k = np.clip(j - (j > which), 0, 2)
        out[:, j] = np.where(which == j, largest, small[np.arange(n), k])
    return out


def expand(contents: ply.PlyContents) -> ply.PlyContents:
    """``contents`` with a compressed vertex element replaced by the decoded 3DGS one (else unchanged).

    The ``chunk`` and ``sh`` elements are consumed; other elements are kept. A vertex element that is
    no 3DGS layout but looks like a known other one raises an error saying how to convert it.
    """
    if is_compressed(contents):
        elements = {"vertex": decompress(contents)}
        elements.update((k, v) for k, v in contents.elements.items() if k not in ("vertex", "chunk", "sh"))
        return ply.PlyContents(contents.path, elements, contents.skipped)
    hint = layout_hint(contents)
    if hint is not None:
        raise ply.PlyError(f"{contents.path}: not a 3D Gaussian splat PLY this add-on reads: {hint}")
    return contents


def layout_hint(contents: ply.PlyContents) -> str | None:
    """What a PLY without the 3DGS vertex properties looks like, and how to convert it; None if 3DGS or unknown."""
    names = set(contents.vertex.dtype.names or ())
    if all(p in names for p in ply.REQUIRED_GAUSSIAN_PROPERTIES):
        return None
    if any(n.startswith("packed_") for n in names) or "chunk" in contents.elements:
        return (
            "it looks like a PlayCanvas/SuperSplat compressed PLY of a layout this add-on does not know; "
            "convert it to a plain PLY with PlayCanvas splat-transform (splat-transform in.compressed.ply out.ply)"
        )
    if {"scale_0", "scale_1"} <= names and "scale_2" not in names:
        return "it looks like 2D Gaussian splats (2DGS, two scales per splat), which 3DGS tools cannot show"
    if {"x", "y", "z"} <= names and not any(n.startswith(("f_dc", "scale", "rot", "opacity")) for n in names):
        return (
            "it looks like an ordinary point cloud or mesh (no opacity, scales or rotations); import it with "
            "File > Import > Stanford PLY instead"
        )
    return None
