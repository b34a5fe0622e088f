"""3DGS PLY -> typed numpy arrays for Blender, and back. No bpy.

Import keeps every vertex property under its PLY name (exact values), except names Blender or this
add-on use themselves (``position``, ``Col``, ``.select_vert``, ``radiance:*``, ...) or that are too long
for an attribute: those are kept as ``ply:<name>`` (:func:`attribute_names`) and export restores them.
Splats with a NaN or infinite value are dropped (counted in :attr:`SplatArrays.warnings`), so they never
reach the object's origin (a median) or the display. It derives display arrays:
``Col`` = (scene-linear RGB of ``0.5 + C0·f_dc``, sigmoid(opacity)), linear ``scale`` and a unit
``rotation`` quaternion (w first). SHARP's PLY stores sRGB colour (``color_space`` 0); a PLY that says
it is linear (1) is used as is. Metadata elements (``intrinsic``, ``image_size``, ...) are kept as
small JSON so that export writes them back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
_CHECK_ROWS = 16384

# Attribute names a PLY property must not take: Blender's built-in ones (some refuse a new attribute, others
# make a second one named "position.001"), the display attributes of this add-on and of Blender 5.3's native
# splats, and our own prefix (so a renamed property cannot meet a PLY property of the same name).
RESERVED_ATTRIBUTES = frozenset(
    {
        "position", "id", "radius", "normal", "material_index", "velocity",
        "sharp_face", "sharp_edge", "crease_vert", "crease_edge", "bevel_weight_vert", "bevel_weight_edge",
        "UVMap", "uv_seam", "Col", "scale", "rotation", "opacity_display",
    }
)  # fmt: skip
RESERVED_PREFIXES = (".", "radiance:", "sharp_", "ply:")
RENAMED_PREFIX = "ply:"
MAX_ATTRIBUTE_BYTES = 63  # Blender refuses names over 67 bytes; a little room is kept for ".001" suffixes


def attribute_names(names: Sequence[str]) -> dict[str, str]:
    """PLY property name -> Blender attribute name, for the names that cannot be kept as they are.

    A reserved name becomes ``ply:<name>``; a name too long for Blender is shortened with a digest of the
    whole name, so two long names that share a start stay apart. Names not in the result are kept as is.
    """
    renamed: dict[str, str] = {}
    taken = set(names)
    for name in names:
        reserved = name in RESERVED_ATTRIBUTES or name.startswith(RESERVED_PREFIXES)
        if not reserved and len(name.encode("utf-8")) <= MAX_ATTRIBUTE_BYTES:
            continue
        target = RENAMED_PREFIX + name
        if len(target.encode("utf-8")) > MAX_ATTRIBUTE_BYTES:
            digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
            head = target.encode("utf-8")[: MAX_ATTRIBUTE_BYTES - 9].decode("utf-8", "ignore")
            target = f"{head}~{digest}"
        while target in taken:
            target = "_" + target[: MAX_ATTRIBUTE_BYTES - 1]
        taken.add(target)
        renamed[name] = target
    return renamed


@dataclass
class Derived:
    """Display attributes computed from the PLY values (see the module docstring)."""

    col: np.ndarray  # (N, 4) f32: scene-linear RGB + alpha
    scale: np.ndarray  # (N, 3) f32, linear
    rotation: np.ndarray  # (N, 4) f32, unit, w first


@dataclass
class SplatArrays:
    """What the importer hands to Blender: the PLY's vertex properties (finite splats only) and metadata.

    A file whose vertex properties are all float32 (every 3DGS layout) keeps them as the ``(N, P)`` rows
    of :attr:`table`, a view of the file where that is possible, so a caller that derives its own arrays
    from the rows (the native point cloud) copies nothing it does not use. :attr:`columns`,
    :attr:`properties` and :attr:`means_cv` give the values as contiguous arrays, made on first use.
    """

    count: int
    kinds: dict[str, str]  # PLY property name -> PLY kind (numpy kind such as "f4"), in file order
    color_space: int | None  # 0 sRGB, 1 linear, None when the file does not say (treated as sRGB)
    camera: ply.SplatCamera | None
    elements_json: str  # the non-vertex elements, see :func:`elements_to_json`
    ply_names: dict[str, str] = field(default_factory=dict)  # attribute name -> PLY name, renamed ones only
    dropped: int = 0  # splats left out because a value was NaN or infinite
    warnings: list[str] = field(default_factory=list)  # for the import report
    table: np.ndarray | None = None  # (N, P) float32 rows in file order, when every property is float32
    # read(check_finite=False): the table's rows are not checked for NaN / infinite values yet (see finite())
    unchecked: bool = False
    source: str = ""  # the file, for messages
    _columns: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """PLY name -> contiguous (N,) array in the attribute dtype (:data:`ATTRIBUTE_TYPES`)."""
        assert not self.unchecked, "call finite() first"
        with self._lock:  # made once, also when two threads ask at the same time
            if self._columns is None:
                assert self.table is not None
                self._columns = _table_columns(self.table, list(self.kinds))
            return self._columns

    def finite(self) -> SplatArrays:
        """These arrays with every row that holds a NaN or infinite value left out (``self`` if checked).

        Raises:
            ply.PlyError: every row has one.
        """
        if not self.unchecked or self.table is None:
            return self
        table, dropped = _finite_table(self.table)
        if dropped == self.count:
            raise ply.PlyError(_all_dropped(self.source, dropped))
        warnings = ([_dropped_warning(dropped, self.count)] if dropped else []) + self.warnings
        return dataclasses.replace(
            self, count=self.count - dropped, table=table, dropped=dropped, warnings=warnings, unchecked=False
        )

    def attribute_name(self, name: str) -> str:
        """The Blender attribute name of PLY property ``name`` (itself, or its safe form)."""
        return self._attribute_names.get(name, name)

    @property
    def _attribute_names(self) -> dict[str, str]:
        return {ply_name: attribute for attribute, ply_name in self.ply_names.items()}

    @property
    def properties(self) -> list[tuple[str, str, np.ndarray]]:
        """(attribute name, PLY kind, (N,) contiguous values) of every property, in file order."""
        renamed = self._attribute_names
        columns = self.columns
        return [(renamed.get(name, name), kind, columns[name]) for name, kind in self.kinds.items()]

    def field(self, name: str) -> np.ndarray:
        """One property as an (N,) array, maybe a strided view of :attr:`table` (no copy)."""
        if self._columns is None and self.table is not None:
            return self.table[:, list(self.kinds).index(name)]
        return self.columns[name]

    @property
    def means_cv(self) -> np.ndarray:
        """(N, 3) f32 positions, OpenCV camera frame, metres (maybe a strided view of :attr:`table`)."""
        names = list(self.kinds)
        first = names.index("x")
        if self._columns is None and self.table is not None and names[first : first + 3] == ["x", "y", "z"]:
            return self.table[:, first : first + 3]
        return np.stack([self.columns[axis] for axis in POSITION_PROPERTIES], axis=1).astype(np.float32, copy=False)


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


def _float_table(vertex: np.ndarray) -> np.ndarray | None:
    """The vertex rows as an (N, P) float32 view when every property is a packed native float32, else None."""
    names = vertex.dtype.names or ()
    fields = vertex.dtype.fields or {}
    if not names or vertex.dtype.itemsize != 4 * len(names) or not vertex.flags.c_contiguous:
        return None
    if any(fields[n][0] != np.dtype("=f4") or fields[n][1] != 4 * i for i, n in enumerate(names)):
        return None
    return vertex.view(np.float32).reshape(len(vertex), len(names))


def _table_columns(table: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """(N, P) float32 rows -> one contiguous array per property."""
    # A blocked transpose of the rows is ~3x faster than gathering each property's strided column on its own.
    block = np.empty((len(names), len(table)), dtype=np.float32)
    for start in range(0, len(table), _TRANSPOSE_ROWS):
        block[:, start : start + _TRANSPOSE_ROWS] = table[start : start + _TRANSPOSE_ROWS].T
    return dict(zip(names, block, strict=True))


def _columns(vertex: np.ndarray) -> dict[str, np.ndarray]:
    """Structured vertex rows of any property types -> one contiguous array per property, in its attribute dtype."""
    out: dict[str, np.ndarray] = {}
    for name in vertex.dtype.names or ():
        kind = vertex.dtype[name].kind + str(vertex.dtype[name].itemsize)
        if kind not in ATTRIBUTE_TYPES:
            raise ply.PlyError(f"vertex property {name!r} has unsupported type {vertex.dtype[name]}")
        if kind == "u4" and len(vertex) and int(vertex[name].max()) > np.iinfo(np.int32).max:
            raise ply.PlyError(f"vertex property {name!r} holds values above 2**31 - 1")
        out[name] = np.ascontiguousarray(vertex[name], dtype=ATTRIBUTE_TYPES[kind][2])
    return out


class NonFiniteRows(Exception):
    """An unchecked table (``read(check_finite=False)``) turned out to hold NaN or infinite values."""


def _finite_table(table: np.ndarray) -> tuple[np.ndarray, int]:
    """``table`` without its rows that hold a NaN or infinite value, and how many those were."""
    # Block by block, so the common all-finite case reads the rows once and allocates almost nothing.
    for start in range(0, len(table), _CHECK_ROWS):
        if not np.isfinite(table[start : start + _CHECK_ROWS]).all():
            keep = np.isfinite(table).all(axis=1)
            return table[keep], len(table) - int(keep.sum())
    return table, 0


def _all_dropped(source: object, count: int) -> str:
    return f"{source}: every one of its {count:,} splats has a NaN or infinite value"


def _dropped_warning(dropped: int, count: int) -> str:
    return f"{dropped:,} of {count:,} splats had NaN or infinite values and were left out"


def read(path: str | os.PathLike[str], check_finite: bool = True) -> SplatArrays:
    """Read a 3DGS PLY (SHARP, generic with ``f_rest_*``, or plain) into arrays for Blender.

    Args:
        path: the PLY.
        check_finite: drop the splats with a NaN or infinite value now. With False, an all-float32 file's
            rows are left unchecked (``unchecked``) for a caller that checks them in its own pass over
            the rows (raising :class:`NonFiniteRows`) and then calls :meth:`SplatArrays.finite`.

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
    if len(vertex) == 0:
        raise ply.PlyError(f"{contents.path}: the PLY has no splats (its vertex element has 0 rows)")
    table = _float_table(vertex)
    columns: dict[str, np.ndarray] | None = None
    dropped = 0
    if table is not None:
        if check_finite:
            table, dropped = _finite_table(table)
    else:
        try:
            columns = _columns(vertex)
        except ply.PlyError as exc:
            raise ply.PlyError(f"{contents.path}: {exc}") from exc
        columns, dropped = _finite_rows(columns)
    warnings: list[str] = []
    if dropped == len(vertex):
        raise ply.PlyError(_all_dropped(contents.path, dropped))
    if dropped:
        warnings.append(_dropped_warning(dropped, len(vertex)))
    space = contents.scalar_element("color_space")
    # ply's own reader of the SHARP camera elements (intrinsic, image_size, extrinsic and legacy forms).
    camera = ply.camera_from_metadata(contents)
    if camera is None and contents.scalar_element("intrinsic") is not None:
        warnings.append("the PLY's camera intrinsics are unusable (NaN, infinite or not positive); no camera made")
    renamed = attribute_names(names)
    if renamed:
        warnings.append(
            "PLY properties kept under another name (Blender or the add-on use theirs): "
            + ", ".join(f"{old} -> {new}" for old, new in renamed.items())
        )
    return SplatArrays(
        count=len(vertex) - dropped,
        kinds={n: vertex.dtype[n].kind + str(vertex.dtype[n].itemsize) for n in names},
        color_space=int(space[0]) if space is not None and space.size else None,
        camera=camera,
        elements_json=elements_to_json(contents),
        ply_names={new: old for old, new in renamed.items()},
        dropped=dropped,
        warnings=warnings,
        table=table,
        unchecked=table is not None and not check_finite,
        source=str(contents.path),
        _columns=columns,
    )


def _finite_rows(columns: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Drop the rows with a NaN or infinite float value; returns (columns, rows dropped)."""
    bad: np.ndarray | None = None
    for values in columns.values():
        if values.dtype.kind == "f":
            row_bad = ~np.isfinite(values)
            bad = row_bad if bad is None else bad | row_bad
    if bad is None or not bad.any():
        return columns, 0
    keep = ~bad
    return {name: np.ascontiguousarray(values[keep]) for name, values in columns.items()}, int(bad.sum())


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
