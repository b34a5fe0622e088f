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


def radiance_base(f_dc: list[np.ndarray], opacity_logits: np.ndarray, color_space: int | None) -> np.ndarray:
    """(N, 4) f32: the f_dc Blender decodes as sRGB (the file's own unless it says linear) and the alpha."""
    out = np.empty((len(opacity_logits), 4), dtype=np.float32)
    for i in range(3):
        values = np.asarray(f_dc[i], dtype=np.float32)
        if color_space == ply.COLOR_SPACE_LINEAR:
            rgb = np.clip(conventions.sh_dc_to_rgb(values), 0.0, None)
            values = conventions.rgb_to_sh_dc(conventions.linear_to_srgb(rgb)).astype(np.float32)
        out[:, i] = values
    out[:, 3] = conventions.sigmoid(np.asarray(opacity_logits, dtype=np.float32))
    return out


def linear_scales(log_scales: list[np.ndarray]) -> np.ndarray:
    scale = np.empty((len(log_scales[0]), 3), dtype=np.float32)
    for i in range(3):
        scale[:, i] = np.exp(np.asarray(log_scales[i], dtype=np.float32))  # contiguous exp, strided copy
    return scale


def gaussian_attributes(arrays: splat.SplatArrays, origin_cv: np.ndarray) -> list[Attribute]:
    """The attributes the renderer reads (position, scale, rotation, radiance), from :func:`splat.read`'s arrays."""
    columns = arrays.columns

    def f32(name: str) -> np.ndarray:
        return columns[name].astype(np.float32, copy=False)

    positions: np.ndarray = arrays.means_cv - np.asarray(origin_cv, dtype=np.float32)
    out = [
        Attribute(POSITION, "FLOAT_VECTOR", "vector", positions),
        Attribute(SCALE, "FLOAT_VECTOR", "vector", linear_scales([f32(f"scale_{i}") for i in range(3)])),
        Attribute(ROTATION, "QUATERNION", "value", splat.unit_quaternions([f32(f"rot_{i}") for i in range(4)])),
        Attribute(
            RADIANCE_BASE,
            "FLOAT4",
            "vector",
            radiance_base([f32(f"f_dc_{i}") for i in range(3)], f32("opacity"), arrays.color_space),
        ),
    ]
    out += [Attribute(f"{SH_PREFIX}{k}", "FLOAT_VECTOR", "vector", band) for k, band in enumerate(sh_bands(columns))]
    return out


def property_attributes(arrays: splat.SplatArrays) -> list[Attribute]:
    """Every PLY vertex property under its own name and type (what export writes back)."""
    out = []
    for prop, kind, values in arrays.properties:
        blender_type, key, _ = splat.ATTRIBUTE_TYPES[kind]
        out.append(Attribute(prop, blender_type, key, values))
    return out
