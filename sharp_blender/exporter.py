# mypy: disable-error-code="union-attr, attr-defined, arg-type, override, misc, assignment, list-item, func-returns-value, operator"
# (fake-bpy-module types every context member as Optional and every enum as a Literal; bpy glue only.)
"""A splat object -> 3DGS PLY, with the object's transform baked into positions, rotations and scales.

Every PLY property the import kept is written back with its original type; positions come from the
mesh geometry (so edits count). Baking takes rotation, translation and a *uniform* scale exactly
(``log σ + ln s``); a non-uniform scale, shear or mirror is refused with a message saying what to
change, because per-axis Gaussians cannot represent it. Higher SH bands (``f_rest_*``) are written
unchanged (exact for SHARP, which has none).
"""

from __future__ import annotations

import json
import logging
import os

import bpy
import numpy as np

from . import importer, placement, ply, splat

logger = logging.getLogger(__name__)


class ExportError(ValueError):
    pass


def _get(mesh: bpy.types.Mesh, name: str, kind: str, count: int) -> np.ndarray:
    attribute = mesh.attributes.get(name)
    if attribute is None or attribute.domain != "POINT":
        raise ExportError(f"{mesh.name} lost its {name!r} attribute; re-import the PLY to export it")
    _, key, dtype = splat.ATTRIBUTE_TYPES[kind]
    out = np.empty(count, dtype=dtype)
    attribute.data.foreach_get(key, out)
    return out


def export_ply(obj: bpy.types.Object, path: str | os.PathLike[str], apply_transform: bool = True) -> int:
    """Write ``obj`` (a splat object made by the importer) to ``path``; returns the splat count.

    Args:
        obj: the object; its evaluated modifiers are ignored (the mesh holds the data).
        path: the PLY to write (atomically).
        apply_transform: bake ``obj.matrix_world`` (world space, metres); else write the data in the
            source camera's OpenCV frame, as imported.

    Raises:
        ExportError: not a splat object, or an attribute is missing.
        placement.TransformError: the transform has a non-uniform scale, shear or mirror.
    """
    mesh = obj.data  # a mesh (points display) or a native point cloud: both keep the PLY's attributes
    if mesh is None or not importer.is_splat_object(obj):
        raise ExportError(f"{obj.name} is not a SHARP splat object; import or generate one first")
    kinds: dict[str, str] = json.loads(mesh[importer.PROP_KINDS])
    origin = np.asarray(mesh.get(importer.PROP_ORIGIN, (0.0, 0.0, 0.0)), dtype=np.float64)
    count = importer.splat_count(obj)
    local = np.empty(count * 3, dtype=np.float32)
    mesh.attributes["position"].data.foreach_get("vector", local)
    local64 = local.reshape(count, 3).astype(np.float64)

    columns = {name: _get(mesh, name, kind, count) for name, kind in kinds.items() if name not in ("x", "y", "z")}
    elements = splat.elements_from_json(mesh.get(importer.PROP_ELEMENTS, "[]"))
    if apply_transform:
        matrix = importer.from_matrix(obj.matrix_world)
        quats = np.stack([columns[f"rot_{i}"] for i in range(4)], axis=1)
        log_scales = np.stack([columns[f"scale_{i}"] for i in range(3)], axis=1)
        means, quats, log_scales = placement.bake_transform(matrix, local64, quats, log_scales)
        for i in range(4):
            columns[f"rot_{i}"] = quats[:, i]
        for i in range(3):
            columns[f"scale_{i}"] = log_scales[:, i]
        # Data now lives in world space: the stored world-to-camera extrinsic E becomes E @ B⁻¹, with B
        # the data's map from the camera frame to world (a similarity when the object is scaled).
        to_world = matrix @ placement.translation(-origin)
        elements = [_moved_extrinsic(name, array, to_world) for name, array in elements]
    else:
        means = local64 + origin
    for i, axis in enumerate(("x", "y", "z")):
        columns[axis] = means[:, i]
    elements = [_recount(name, array, count) for name, array in elements]
    ordered = {name: columns[name] for name in kinds}
    ply.write_ply(path, splat.vertex_array(ordered, kinds), elements)
    logger.info("exported %s: %d splats to %s", obj.name, count, path)
    return count


def _moved_extrinsic(name: str, array: np.ndarray, to_world: np.ndarray) -> tuple[str, np.ndarray]:
    if name != "extrinsic" or array.dtype.names is None or len(array) != 16:
        return name, array
    values = array[array.dtype.names[0]].astype(np.float64).reshape(4, 4) @ np.linalg.inv(to_world)
    out = array.copy()
    out[array.dtype.names[0]] = values.ravel()
    return name, out


def _recount(name: str, array: np.ndarray, count: int) -> tuple[str, np.ndarray]:
    # SHARP's `frame` element is (frames, splats); keep the splat count true after deletions.
    if name != "frame" or array.dtype.names is None or len(array) != 2:
        return name, array
    out = array.copy()
    out[array.dtype.names[0]][1] = count
    return name, out
