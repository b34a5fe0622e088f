"""A splat object -> 3DGS PLY in the PLY's own convention, with the object's transform baked in.

The object may be the importer's mesh or a point cloud (Blender 5.3's ``GAUSSIAN_SPLAT``, ours or one
made by Blender's own PLY import): both are read from ``obj.data.attributes``. Every PLY property the
import kept is written back with its original type; a property that only exists as a native splat
attribute (``scale``, ``rotation``, ``radiance:base``, ``radiance:sh_k``) is converted back. Positions
come from the geometry, so edits count.

Blender's world is mapped back through the import's PLY-frame -> world matrix (see :mod:`.placement`),
so an untouched import writes the numbers it read, and a moved, rotated or uniformly scaled object
writes that change in the file's axes: positions, quaternions, log-scales (``+ ln s``) and the SH
bands 1-3 (``f_rest_*``, :mod:`.sh_rotation`). A non-uniform scale, shear or mirror is refused with a
message saying what to change, because per-axis Gaussians cannot represent it. The ``extrinsic``
element moves with the splats, so the source camera still sees the photo.

*Plain* writes only the standard 3DGS vertex properties (float32, INRIA order) and no metadata
elements, which every splat tool reads.
"""

from __future__ import annotations

import json
import logging
import os
import re

import bpy
import numpy as np

from . import importer, placement, sh_rotation, splat
from .io import conventions, ply

logger = logging.getLogger(__name__)

NATIVE_BASE = "radiance:base"
_NATIVE_SH = re.compile(r"radiance:sh_(\d+)$")
_F_REST = re.compile(r"f_rest_(\d+)$")


class ExportError(ValueError):
    pass


def _data(obj: bpy.types.Object) -> bpy.types.ID | None:
    data = obj.data
    if isinstance(data, bpy.types.Mesh) or type(data).__name__ == "PointCloud":
        return data
    return None


def can_export(obj: bpy.types.Object | None) -> bool:
    """A splat object made by the importer, or any point cloud with native splat attributes."""
    data = _data(obj) if obj is not None else None
    if data is None:
        return False
    return importer.PROP_KINDS in data or data.attributes.get(NATIVE_BASE) is not None


def _read(data: bpy.types.ID, name: str, width: int, key: str, dtype: type = np.float32) -> np.ndarray | None:
    attribute = data.attributes.get(name)
    if attribute is None or attribute.domain != "POINT":
        return None
    out: np.ndarray = np.empty(len(attribute.data) * width, dtype=dtype)
    attribute.data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


def _native_sh_count(data: bpy.types.ID) -> int:
    return sum(1 for a in data.attributes if _NATIVE_SH.match(a.name))


def _native_kinds(data: bpy.types.ID) -> dict[str, str]:
    """The standard 3DGS properties for a cloud the importer did not make (e.g. Blender's own import)."""
    rest = sum(1 for a in data.attributes if _F_REST.match(a.name)) or 3 * _native_sh_count(data)
    names = [*ply.SHARP_VERTEX_PROPERTIES[:6], *(f"f_rest_{i}" for i in range(rest)), *ply.SHARP_VERTEX_PROPERTIES[6:]]
    return dict.fromkeys(names, "f4")


def _column(data: bpy.types.ID, name: str, kind: str) -> np.ndarray:
    """One PLY column: the attribute of that name, else converted back from the native splat attributes."""
    _, key, dtype = splat.ATTRIBUTE_TYPES[kind]
    values = _read(data, name, 1, key, dtype)
    if values is not None:
        return values
    derived: np.ndarray | None = None
    if name.startswith("scale_") and (scale := _read(data, "scale", 3, "vector")) is not None:
        with np.errstate(divide="ignore"):
            derived = np.log(scale[:, int(name[6:])])
    elif name.startswith("rot_") and (rotation := _read(data, "rotation", 4, "value")) is not None:
        derived = rotation[:, int(name[4:])]
    elif name.startswith("f_dc_") and (base := _read(data, NATIVE_BASE, 4, "vector")) is not None:
        derived = base[:, int(name[5:])]
    elif name == "opacity" and (base := _read(data, NATIVE_BASE, 4, "vector")) is not None:
        derived = conventions.logit(np.clip(base[:, 3], 1e-7, 1 - 1e-7))
    elif (match := _F_REST.match(name)) and (per_channel := _native_sh_count(data)):
        channel, k = divmod(int(match.group(1)), per_channel)
        sh = _read(data, f"radiance:sh_{k}", 3, "vector")
        derived = sh[:, channel] if sh is not None and channel < 3 else None
    if derived is None:
        raise ExportError(f"{data.name} lost its {name!r} attribute; re-import the PLY to export it")
    return np.ascontiguousarray(derived, dtype=np.float32)


def _frame(data: bpy.types.ID) -> np.ndarray:
    stored = data.get(importer.PROP_FRAME)
    if stored is not None and len(stored) == 16:
        return np.asarray(stored, dtype=np.float64).reshape(4, 4)
    if importer.PROP_KINDS in data:  # imported before the frame was stored: World Origin placement
        return placement.ORIGIN_FRAME
    return np.eye(4)  # Blender's own PLY import keeps the file's raw axes


def export_ply(
    obj: bpy.types.Object, path: str | os.PathLike[str], apply_transform: bool = True, plain: bool = False
) -> int:
    """Write ``obj`` (a splat mesh or point cloud) to ``path``; returns the splat count.

    Args:
        obj: the object; its evaluated modifiers are ignored (the data holds the splats).
        path: the PLY to write (atomically).
        apply_transform: bake the object's transform (relative to where the import put it) into the
            data, in the PLY's axes; else write the stored data as it is.
        plain: only the vertex element with the standard 3DGS properties (no metadata elements).

    Raises:
        ExportError: not a splat object, an attribute is missing, or SH bands cannot be rotated.
        placement.TransformError: the transform has a non-uniform scale, shear or mirror.
    """
    data = _data(obj)
    if data is None or not can_export(obj):
        raise ExportError(f"{obj.name} is not a Gaussian splat object; import or generate one first")
    kinds: dict[str, str] = (
        json.loads(data[importer.PROP_KINDS]) if importer.PROP_KINDS in data else _native_kinds(data)
    )
    if plain:
        kinds = _plain_kinds(kinds)
    origin = np.asarray(data.get(importer.PROP_ORIGIN, (0.0, 0.0, 0.0)), dtype=np.float64)
    local = _read(data, "position", 3, "vector")
    if local is None:
        raise ExportError(f"{obj.name} has no point positions to export")
    count = len(local)
    if count == 0:
        raise ExportError(f"{obj.name} has no splats left to export (every point was deleted)")
    columns = {name: _column(data, name, kind) for name, kind in kinds.items() if name not in ("x", "y", "z")}
    elements = [] if plain else splat.elements_from_json(data.get(importer.PROP_ELEMENTS, "[]"))
    if apply_transform:
        maps = placement.export_maps(_frame(data), importer.from_matrix(obj.matrix_world), origin)
        quats = np.stack([columns[f"rot_{i}"] for i in range(4)], axis=1)
        log_scales = np.stack([columns[f"scale_{i}"] for i in range(3)], axis=1)
        means, quats, log_scales = placement.bake_transform(maps.to_file, local.astype(np.float64), quats, log_scales)
        for i in range(4):
            columns[f"rot_{i}"] = quats[:, i]
        for i in range(3):
            columns[f"scale_{i}"] = log_scales[:, i]
        _rotate_sh(obj.name, columns, placement.similarity_parts(maps.to_file)[0])
        elements = [_moved_extrinsic(name, array, maps.change) for name, array in elements]
    else:
        means = local.astype(np.float64) + origin
    for i, axis in enumerate(("x", "y", "z")):
        columns[axis] = means[:, i]
    elements = [_recount(name, array, count) for name, array in elements]
    # Properties kept under a safe attribute name (splat.attribute_names) get their PLY names back.
    ply_names: dict[str, str] = json.loads(data.get(importer.PROP_PLY_NAMES, "{}"))
    ordered = {ply_names.get(name, name): columns[name] for name in kinds}
    ply_kinds = {ply_names.get(name, name): kind for name, kind in kinds.items()}
    ply.write_ply(path, splat.vertex_array(ordered, ply_kinds), elements)
    logger.info("exported %s: %d splats to %s", obj.name, count, path)
    return count


def _plain_kinds(kinds: dict[str, str]) -> dict[str, str]:
    rest = sorted(int(m.group(1)) for name in kinds if (m := _F_REST.match(name)))
    if rest != list(range(len(rest))) or len(rest) not in (0, 9, 24, 45):
        logger.warning("plain export drops %d f_rest properties that are not SH bands 1-3", len(rest))
        rest = []
    names = [*ply.SHARP_VERTEX_PROPERTIES[:6], *(f"f_rest_{i}" for i in rest), *ply.SHARP_VERTEX_PROPERTIES[6:]]
    return dict.fromkeys(names, "f4")


def _rotate_sh(name: str, columns: dict[str, np.ndarray], rotation: np.ndarray) -> None:
    rest = sorted(int(m.group(1)) for key in columns if (m := _F_REST.match(key)))
    if not rest or np.allclose(rotation, np.eye(3), atol=1e-9):
        return
    if rest != list(range(len(rest))) or len(rest) not in (9, 24, 45):
        raise ExportError(
            f"{name} has {len(rest)} f_rest properties, which are not SH bands 1-3, so its view-dependent colour "
            "cannot be rotated; clear the object's rotation, or export without Apply Transform"
        )
    stacked = np.stack([columns[f"f_rest_{i}"] for i in rest], axis=1)
    rotated = sh_rotation.rotate_f_rest(stacked, rotation)
    for i in rest:
        columns[f"f_rest_{i}"] = rotated[:, i]


def _moved_extrinsic(name: str, array: np.ndarray, change: np.ndarray) -> tuple[str, np.ndarray]:
    if name != "extrinsic" or array.dtype.names is None or len(array) not in (12, 16):
        return name, array
    values = array[array.dtype.names[0]].astype(np.float64)
    E = np.eye(4)
    if len(array) == 16:
        E = values.reshape(4, 4)
    else:  # legacy 3x4 with the 3x3 part transposed (as ply.camera_from_metadata reads it)
        legacy = values.reshape(3, 4)
        E[:3, :3], E[:3, 3] = legacy[:, :3].T, legacy[:, 3]
    moved = placement.exported_extrinsic(E, change)
    if len(array) == 12:
        moved = np.concatenate([moved[:3, :3].T, moved[:3, 3:]], axis=1)
    out = array.copy()
    out[array.dtype.names[0]] = moved.ravel()
    return name, out


def _recount(name: str, array: np.ndarray, count: int) -> tuple[str, np.ndarray]:
    # SHARP's `frame` element is (frames, splats); keep the splat count true after deletions.
    if name != "frame" or array.dtype.names is None or len(array) != 2:
        return name, array
    out = array.copy()
    out[array.dtype.names[0]][1] = count
    return name, out
