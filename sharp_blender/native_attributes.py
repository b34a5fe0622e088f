"""The point attributes of a native Gaussian point cloud (Blender >= 5.3), as numpy arrays. No bpy.

Blender 5.3's renderers (EEVEE, Workbench, Cycles) draw a ``PointCloud`` of type ``GAUSSIAN_SPLAT``
from these point attributes (measured with bpy 5.3.0; see ``../shared/spec/blender-notes.md``):

========================  ============  ===================================================
``position``              FLOAT_VECTOR  object-space mean (here ``p_cv - origin_cv``)
``scale``                 FLOAT_VECTOR  linear σ per axis (exp of the PLY's log-scale)
``rotation``              QUATERNION    unit, w first
``radiance:base``         FLOAT4        raw ``f_dc_0..2`` and sigmoid(opacity)
``radiance:sh_k``         FLOAT_VECTOR  SH coefficient k + 1 (band 1 first), RGB
========================  ============  ===================================================

The renderer decodes ``0.5 + C0·f_dc`` as sRGB and blends in linear light, which is SHARP's own rule,
so ``f_dc`` goes in unchanged; only a PLY that says it is linear (``color_space`` 1) is re-encoded.

The PLY stores ``f_rest_*`` channel-major (all coefficients of red, then green, then blue);
``radiance:sh_k`` is coefficient-major, ``(f_rest_k, f_rest_{K+k}, f_rest_{2K+k})`` for K
coefficients per channel, which is how Blender's own ``wm.ply_import`` fills them.

Each PLY vertex property is stored once. Those these attributes hold exactly (:func:`held_natively`:
``x, y, z`` in ``position`` plus the stored origin, float32 ``f_dc_*`` of an sRGB file in
``radiance:base``, float32 ``f_rest_*`` of whole RGB coefficients in ``radiance:sh_k``) are not stored
again under their own names; export reads them back from there. Every other property keeps its name
and exact values. :func:`cloud_attributes` makes all the arrays in one pass over the splats, a block of
rows at a time, so that each row is read from memory once and the maths runs on cached, contiguous data.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import splat
from .io import conventions, ply

logger = logging.getLogger(__name__)

POSITION, SCALE, ROTATION, RADIANCE_BASE = "position", "scale", "rotation", "radiance:base"
SH_PREFIX = "radiance:sh_"
RESERVED = (POSITION, SCALE, ROTATION, RADIANCE_BASE)
_F_REST = re.compile(r"f_rest_(\d+)$")


@dataclass(frozen=True)
class Attribute:
    """One point attribute to create: ``attributes.new(name, data_type, 'POINT')`` then
    ``data.foreach_set(key, values.ravel())``."""

    name: str
    data_type: str
    key: str
    values: np.ndarray  # C-contiguous, (N,) or (N, width), in the dtype foreach_set takes


def sh_rest_count(names: Mapping[str, object] | list[str] | tuple[str, ...]) -> int:
    """How many ``f_rest_*`` properties form the run ``f_rest_0 .. f_rest_{M-1}`` (0 if none)."""
    indices = {int(m.group(1)) for n in names if (m := _F_REST.match(n))}
    count = 0
    while count in indices:
        count += 1
    return count


def sh_bands(columns: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """``f_rest_*`` (channel-major) -> one (N, 3) f32 array per SH coefficient beyond the DC, in order.

    A run of ``f_rest_*`` that is not a multiple of three (no whole RGB coefficients) gives no bands:
    the file's layout is unknown, so the view-dependent colour is left out (the values are still kept).
    """
    total = sh_rest_count(list(columns))
    if total == 0:
        return []
    if total % 3:
        logger.warning("%d f_rest_* properties are not whole RGB coefficients: view-dependent colour left out", total)
        return []
    per_channel = total // 3
    bands = []
    for k in range(per_channel):
        band = np.empty((len(columns["f_rest_0"]), 3), dtype=np.float32)
        for channel in range(3):
            band[:, channel] = columns[f"f_rest_{channel * per_channel + k}"]
        bands.append(band)
    return bands


def _srgb_f_dc(values: np.ndarray) -> np.ndarray:
    """f_dc of linear colour -> the f_dc whose sRGB decoding is that colour (what Blender's renderer expects)."""
    rgb = np.clip(conventions.sh_dc_to_rgb(np.asarray(values, dtype=np.float32)), 0.0, None)
    return conventions.rgb_to_sh_dc(conventions.linear_to_srgb(rgb)).astype(np.float32)  # type: ignore[no-any-return]


def radiance_base(f_dc: list[np.ndarray], opacity_logits: np.ndarray, color_space: int | None) -> np.ndarray:
    """(N, 4) f32: the f_dc Blender decodes as sRGB (the file's own unless it says linear) and the alpha."""
    out = np.empty((len(opacity_logits), 4), dtype=np.float32)
    for i in range(3):
        values = np.asarray(f_dc[i], dtype=np.float32)
        out[:, i] = _srgb_f_dc(values) if color_space == ply.COLOR_SPACE_LINEAR else values
    out[:, 3] = conventions.sigmoid(np.asarray(opacity_logits, dtype=np.float32))
    return out


def held_natively(arrays: splat.SplatArrays) -> set[str]:
    """The PLY properties whose exact values the native attributes hold, so they are not stored twice."""
    kinds = arrays.kinds
    held = set(splat.POSITION_PROPERTIES)  # export writes x, y, z from the geometry (position + origin)
    if arrays.color_space != ply.COLOR_SPACE_LINEAR:  # else radiance:base holds re-encoded values
        held.update(f"f_dc_{i}" for i in range(3) if kinds.get(f"f_dc_{i}") == "f4")
    rest = sh_rest_count(list(kinds))
    if rest % 3 == 0:
        held.update(f"f_rest_{i}" for i in range(rest) if kinds[f"f_rest_{i}"] == "f4")
    return held


@dataclass
class _Renderer:
    """The renderer's arrays of a cloud, filled a block of rows at a time."""

    position: np.ndarray  # (N, 3)
    scale: np.ndarray  # (N, 3)
    rotation: np.ndarray  # (N, 4)
    base: np.ndarray  # (N, 4)
    bands: list[np.ndarray]  # (N, 3) each

    @classmethod
    def empty(cls, count: int, bands: int) -> _Renderer:
        def f32(width: int) -> np.ndarray:
            return np.empty((count, width), dtype=np.float32)

        return cls(f32(3), f32(3), f32(4), f32(4), [f32(3) for _ in range(bands)])


_BLOCK_BYTES = 1 << 19  # rows a block: about 512 KiB of them, so a block's maths stays in the L2 cache
_DERIVED_FROM = (
    *splat.POSITION_PROPERTIES,
    "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip


def _derive_block(
    src: Mapping[str, np.ndarray],
    out: _Renderer,
    rows: slice,
    origin: np.ndarray,
    linear: bool,
    scratch: tuple[np.ndarray, np.ndarray],
) -> None:
    """The renderer's attributes of one block of rows, from its (m,) source columns.

    Ufuncs run on contiguous inputs into a contiguous scratch row, then one strided copy per channel:
    a ufunc writing into a strided ``out`` loses SIMD, and numpy copies into (m, 3) arrays row by row.
    """
    m = rows.stop - rows.start
    a, b = scratch[0][:m], scratch[1][:m]
    for i, axis in enumerate(splat.POSITION_PROPERTIES):
        np.subtract(src[axis], origin[i], out=out.position[rows, i])
    for i in range(3):
        np.exp(src[f"scale_{i}"], out=a)
        out.scale[rows, i] = a
    for i in range(3):
        f_dc = src[f"f_dc_{i}"]
        out.base[rows, i] = _srgb_f_dc(f_dc) if linear else f_dc
    out.base[rows, 3] = conventions.sigmoid(src["opacity"], out=a)
    q = [src[f"rot_{i}"] for i in range(4)]
    np.multiply(q[0], q[0], out=a)
    for c in q[1:]:
        a += np.multiply(c, c, out=b)
    np.sqrt(a, out=a)
    zero = a == 0
    any_zero = bool(zero.any())
    if any_zero:
        a[zero] = 1.0
    np.reciprocal(a, out=a)
    for i, c in enumerate(q):
        out.rotation[rows, i] = np.multiply(c, a, out=b)
    if any_zero:  # zero quaternions (no rotation stored) become the identity
        out.rotation[rows][zero] = (1.0, 0.0, 0.0, 0.0)
    per_channel = len(out.bands)
    for k, band in enumerate(out.bands):
        for channel in range(3):
            band[rows, channel] = src[f"f_rest_{channel * per_channel + k}"]


def _band_count(names: list[str]) -> int:
    total = sh_rest_count(names)
    if total % 3:
        logger.warning("%d f_rest_* properties are not whole RGB coefficients: view-dependent colour left out", total)
        return 0
    return total // 3


def cloud_attributes(arrays: splat.SplatArrays, origin_cv: np.ndarray) -> list[Attribute]:
    """Every attribute of the native point cloud of :func:`splat.read`'s arrays, in one pass (no Python loop
    over splats): ``position``, the PLY properties not :func:`held_natively` (own name and type), ``scale``,
    ``rotation``, ``radiance:base`` and ``radiance:sh_k``. Positions are ``p_cv - origin_cv``.

    Raises:
        splat.NonFiniteRows: ``arrays.unchecked`` and a row holds a NaN or infinite value (checked here,
            on the cached rows, rather than in a pass of its own); use ``arrays.finite()``.
    """
    names = list(arrays.kinds)
    count = arrays.count
    held = held_natively(arrays)
    kept = [name for name in names if name not in held]
    bands = _band_count(names)
    out = _Renderer.empty(count, bands)
    sources = [*_DERIVED_FROM, *(f"f_rest_{i}" for i in range(3 * bands))]
    origin = np.asarray(origin_cv, dtype=np.float32)
    linear = arrays.color_space == ply.COLOR_SPACE_LINEAR
    table = arrays.table
    unchecked = arrays.unchecked
    step = max(1024, _BLOCK_BYTES // (4 * len(names)))
    scratch = (np.empty(step, dtype=np.float32), np.empty(step, dtype=np.float32))
    if table is not None:
        # Each block of rows is transposed once into a cached scratch block (contiguous rows for the maths),
        # and the kept properties are copied from there into their own (N,) arrays (one allocation each,
        # so that each can be freed as soon as Blender has its copy).
        index = {name: i for i, name in enumerate(names)}
        kept_values = {name: np.empty(count, dtype=np.float32) for name in kept}
        kept_index = [(kept_values[name], index[name]) for name in kept]
        cache = np.empty((len(names), step), dtype=np.float32)
        for start in range(0, count, step):
            rows = slice(start, min(count, start + step))
            block = cache[:, : rows.stop - start]
            np.copyto(block, table[rows].T)
            if unchecked and not np.isfinite(block).all():
                raise splat.NonFiniteRows(arrays.source)
            for values, column in kept_index:
                values[rows] = block[column]
            _derive_block({n: block[index[n]] for n in sources}, out, rows, origin, linear, scratch)
    else:
        columns = arrays.columns
        kept_values = {name: columns[name] for name in kept}
        for start in range(0, count, step):
            rows = slice(start, min(count, start + step))
            src = {n: columns[n][rows].astype(np.float32, copy=False) for n in sources}
            _derive_block(src, out, rows, origin, linear, scratch)
    properties = []
    for name in kept:
        blender_type, key, _ = splat.ATTRIBUTE_TYPES[arrays.kinds[name]]
        properties.append(Attribute(arrays.attribute_name(name), blender_type, key, kept_values[name]))
    return [
        Attribute(POSITION, "FLOAT_VECTOR", "vector", out.position),
        *properties,
        Attribute(SCALE, "FLOAT_VECTOR", "vector", out.scale),
        Attribute(ROTATION, "QUATERNION", "value", out.rotation),
        Attribute(RADIANCE_BASE, "FLOAT4", "vector", out.base),
        *(Attribute(f"{SH_PREFIX}{k}", "FLOAT_VECTOR", "vector", band) for k, band in enumerate(out.bands)),
    ]
