"""3DGS PLY -> typed numpy arrays for Blender, and back. No bpy.

Import keeps every vertex property under its PLY name (exact values) and derives display arrays:
``Col`` = (scene-linear RGB of ``0.5 + C0·f_dc``, sigmoid(opacity)), linear ``scale`` and a unit
``rotation`` quaternion (w first). SHARP's PLY stores sRGB colour (``color_space`` 0); a PLY that says
it is linear (1) is used as is. Metadata elements (``intrinsic``, ``image_size``, ...) are kept as
small JSON so that export writes them back.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .io import compressed_ply, conventions, ply

logger = logging.getLogger(__name__)

# Metadata elements larger than this are not kept (they would bloat the .blend as JSON).
MAX_KEPT_ELEMENT_ROWS = 4096

# PLY numpy kinds -> (Blender attribute type, foreach_set key, numpy dtype for foreach_set).
_FLOAT = ("FLOAT", "value", np.float32)
_INT = ("INT", "value", np.int32)
ATTRIBUTE_TYPES: dict[str, tuple[str, str, type]] = {
    "f4": _FLOAT,
    "f8": _FLOAT,  # Blender has no double attributes; exported back as double
    "i1": ("INT8", "value", np.int8),
    "u1": _INT,
    "i2": _INT,
    "u2": _INT,
    "i4": _INT,
    "u4": _INT,  # values above 2**31 - 1 do not fit; import refuses them
}
POSITION_PROPERTIES = ("x", "y", "z")
_TRANSPOSE_ROWS = 8192


@dataclass
class Derived:
    """Display attributes computed from the PLY values (see the module docstring)."""

    col: np.ndarray  # (N, 4) f32: scene-linear RGB + alpha
    scale: np.ndarray  # (N, 3) f32, linear
    rotation: np.ndarray  # (N, 4) f32, unit, w first


@dataclass
class SplatArrays:
    """What the importer hands to Blender. All arrays C-contiguous, ready for ``foreach_set``."""

    count: int
    means_cv: np.ndarray  # (N, 3) f32, OpenCV camera frame, metres
    properties: list[tuple[str, str, np.ndarray]]  # (PLY name, PLY kind, (N,) array in the attribute dtype)
    columns: dict[str, np.ndarray]  # PLY name -> the same (N,) arrays
    color_space: int | None  # 0 sRGB, 1 linear, None when the file does not say (treated as sRGB)
    camera: ply.SplatCamera | None
    elements_json: str  # the non-vertex elements, see :func:`elements_to_json`


def elements_to_json(contents: ply.PlyContents) -> str:
    """Small non-vertex elements as JSON: ``[{"name", "properties": [[name, kind]...], "rows": [[...]...]}]``."""
    kept: list[dict[str, Any]] = []
    for name, array in contents.elements.items():
        if name == "vertex" or array.dtype.names is None:
            continue
        if len(array) > MAX_KEPT_ELEMENT_ROWS:
            logger.warning("not keeping PLY element %r (%d rows) for export", name, len(array))
            continue
        properties = [[p, array.dtype[p].kind + str(array.dtype[p].itemsize)] for p in array.dtype.names]
        # Metadata only (a few dozen numbers), so a Python list is fine here.
        rows = [[array[p][i].item() for p in array.dtype.names] for i in range(len(array))]
        kept.append({"name": name, "properties": properties, "rows": rows})
    return json.dumps(kept)


def elements_from_json(text: str) -> list[tuple[str, np.ndarray]]:
    """Inverse of :func:`elements_to_json`: (name, structured array) pairs in file order."""
    out: list[tuple[str, np.ndarray]] = []
    for element in json.loads(text or "[]"):
        dtype = np.dtype([(p, "<" + kind) for p, kind in element["properties"]])
        array = np.array([tuple(row) for row in element["rows"]], dtype=dtype)
        out.append((element["name"], array))
    return out


def display_colour(f_dc: Sequence[np.ndarray], opacity_logits: np.ndarray, color_space: int | None) -> np.ndarray:
    """Three (N,) f_dc columns + (N,) opacity logits -> (N, 4) f32 scene-linear RGBA for Blender."""
    rgba = np.empty((len(opacity_logits), 4), dtype=np.float32)

    def channel(i: int) -> None:
        rgb = np.clip(conventions.sh_dc_to_rgb(np.asarray(f_dc[i], dtype=np.float32)), 0.0, 1.0)
        rgba[:, i] = rgb if color_space == ply.COLOR_SPACE_LINEAR else conventions.srgb_to_linear(rgb)

    # numpy releases the GIL inside ufuncs, so the channels convert in parallel (the pow is the cost).
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(channel, range(3)))
    rgba[:, 3] = conventions.sigmoid(np.asarray(opacity_logits, dtype=np.float32))
    return rgba


def unit_quaternions(q: Sequence[np.ndarray]) -> np.ndarray:
    """Four (N,) columns w, x, y, z -> normalised (N, 4) f32; zero quaternions become the identity."""
    w, x, y, z = (np.asarray(c, dtype=np.float32) for c in q)
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    zero = norm == 0
    norm[zero] = 1.0
    inverse = 1.0 / norm
    out = np.empty((len(w), 4), dtype=np.float32)
    for i, c in enumerate((w, x, y, z)):
        # Contiguous maths, then a strided copy: a ufunc writing to a strided `out` loses SIMD (~20x slower).
        out[:, i] = c * inverse
    out[zero] = (1.0, 0.0, 0.0, 0.0)
    return out


def _columns(vertex: np.ndarray) -> dict[str, np.ndarray]:
    """Structured vertex rows -> one contiguous array per property, each in its attribute dtype."""
    names = vertex.dtype.names or ()
    if names and all(vertex.dtype[n] == np.dtype("<f4") for n in names) and vertex.dtype.itemsize == 4 * len(names):
        # The common case (all float32): one blocked transpose of the rows is ~3x faster than gathering
        # each property's strided column on its own.
        rows = vertex.view(np.float32).reshape(len(vertex), len(names))
        block = np.empty((len(names), len(vertex)), dtype=np.float32)
        for start in range(0, len(vertex), _TRANSPOSE_ROWS):
            block[:, start : start + _TRANSPOSE_ROWS] = rows[start : start + _TRANSPOSE_ROWS].T
        return dict(zip(names, block, strict=True))
    out: dict[str, np.ndarray] = {}
    for name in names:
        kind = vertex.dtype[name].kind + str(vertex.dtype[name].itemsize)
        if kind not in ATTRIBUTE_TYPES:
            raise ply.PlyError(f"vertex property {name!r} has unsupported type {vertex.dtype[name]}")
        if kind == "u4" and len(vertex) and int(vertex[name].max()) > np.iinfo(np.int32).max:
            raise ply.PlyError(f"vertex property {name!r} holds values above 2**31 - 1")
        out[name] = np.ascontiguousarray(vertex[name], dtype=ATTRIBUTE_TYPES[kind][2])
    return out


def read(path: str | os.PathLike[str]) -> SplatArrays:
    """Read a 3DGS PLY (SHARP, generic with ``f_rest_*``, or plain) into arrays for Blender.

    Raises:
        ply.PlyError: the file is malformed or lacks the 3DGS properties; the message names them.
    """
    contents = compressed_ply.expand(ply.read_ply(path))  # chunked .compressed.ply -> the plain layout
    vertex = contents.vertex
    names = vertex.dtype.names or ()
    missing = [p for p in ply.REQUIRED_GAUSSIAN_PROPERTIES if p not in names]
    if missing:
        raise ply.PlyError(
            f"{contents.path}: not a 3D Gaussian splat PLY: vertex properties {', '.join(missing)} are missing "
            f"(found: {', '.join(names) or 'none'})"
        )
    try:
        columns = _columns(vertex)
    except ply.PlyError as exc:
        raise ply.PlyError(f"{contents.path}: {exc}") from exc
    count = len(vertex)
    means = np.empty((count, 3), dtype=np.float32)
    for i, axis in enumerate("xyz"):
        means[:, i] = columns[axis]
    space = contents.scalar_element("color_space")
    return SplatArrays(
        count=count,
        means_cv=means,
        properties=[(n, vertex.dtype[n].kind + str(vertex.dtype[n].itemsize), columns[n]) for n in names],
        columns=columns,
        color_space=int(space[0]) if space is not None and space.size else None,
        # ply's own reader of the SHARP camera elements (intrinsic, image_size, extrinsic and legacy forms).
        camera=ply.camera_from_metadata(contents),
        elements_json=elements_to_json(contents),
    )


def derive(arrays: SplatArrays) -> Derived:
    """The display attributes ``Col``, ``scale`` and ``rotation`` of :func:`read`'s arrays."""
    columns = arrays.columns

    def f32(name: str) -> np.ndarray:
        return columns[name].astype(np.float32, copy=False)

    scale = np.empty((arrays.count, 3), dtype=np.float32)
    for i in range(3):
        scale[:, i] = np.exp(f32(f"scale_{i}"))  # contiguous exp, strided copy (see unit_quaternions)
    return Derived(
        col=display_colour([f32(f"f_dc_{i}") for i in range(3)], f32("opacity"), arrays.color_space),
        scale=scale,
        rotation=unit_quaternions([f32(f"rot_{i}") for i in range(4)]),
    )


def vertex_array(columns: dict[str, np.ndarray], kinds: dict[str, str]) -> np.ndarray:
    """Exported columns -> a structured vertex array with each property's original PLY kind (default f4)."""
    return ply.structured(
        {name: np.asarray(values).astype(kinds.get(name, "f4"), copy=False) for name, values in columns.items()}
    )
