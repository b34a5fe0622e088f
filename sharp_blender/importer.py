"""3DGS PLY -> one Blender splat object (numpy + foreach_set), its camera and display.

On Blender >= 5.3 the object is a native Gaussian point cloud (:mod:`.native_cloud`); before, or with
``display_mode="POINTS"``, a mesh of loose points with the Geometry Nodes display. Either stores
``p_cv - origin_cv`` (OpenCV frame, metres), every PLY vertex property under its own name, and the
derived attributes of its display. What export needs to write the file back (origin, property kinds,
metadata elements) is kept in the data's custom properties.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from . import camera, display, native_attributes, native_cloud, placement, splat
from .native_attributes import Attribute

logger = logging.getLogger(__name__)

PROP_ORIGIN = "sharp_origin_cv"
PROP_KINDS = "sharp_ply_kinds"
PROP_ELEMENTS = "sharp_ply_elements"
PROP_PLY_NAMES = "sharp_ply_names"  # attribute -> PLY name, for properties kept under a safe name (splat.py)
PROP_SOURCE = "sharp_source"
PROP_FRAME = "sharp_ply_frame"  # 16 floats: PLY frame -> Blender world at import; export maps back through it
PROP_CAMERA = "sharp_camera"  # on the object: the name of its camera object
COL, SCALE, ROTATION = "Col", "scale", "rotation"
PLACEMENTS = (
    ("ORIGIN", "World Origin", "Camera at the world origin looking along +Y; the scene in front of it"),
    ("CURSOR", "3D Cursor", "Camera at the 3D cursor, turned like the cursor, looking along its +Y"),
)


@dataclass
class ImportResult:
    splat: bpy.types.Object
    camera: bpy.types.Object | None
    seconds: float
    warnings: list[str] = field(default_factory=list)  # dropped non-finite splats, renamed properties, ...


def to_matrix(array: np.ndarray) -> Matrix:
    return Matrix([list(map(float, row)) for row in np.asarray(array)])


def from_matrix(matrix: Matrix) -> np.ndarray:
    return np.array([list(row) for row in matrix], dtype=np.float64)


def _set(mesh: bpy.types.Mesh, name: str, kind: str, domain_values: np.ndarray, key: str = "value") -> None:
    attribute = mesh.attributes.new(name, kind, "POINT")
    attribute.data.foreach_set(key, np.ascontiguousarray(domain_values).ravel())


def build_mesh(name: str, arrays: splat.SplatArrays, origin_cv: np.ndarray) -> bpy.types.Mesh:
    """A mesh of ``arrays.count`` loose vertices with all attributes; the hot path (no Python loop).

    The display attributes are derived on a worker thread while this thread copies the PLY values
    into Blender: numpy releases the GIL, so on two cores the two halves overlap.
    """
    mesh = bpy.data.meshes.new(name)
    try:
        with ThreadPoolExecutor(1) as pool:
            derived = pool.submit(splat.derive, arrays)
            mesh.vertices.add(arrays.count)
            positions: np.ndarray = arrays.means_cv - origin_cv.astype(np.float32)
            mesh.attributes["position"].data.foreach_set("vector", positions.ravel())
            for prop, kind, values in arrays.properties:
                blender_type, key, _ = splat.ATTRIBUTE_TYPES[kind]
                _set(mesh, prop, blender_type, values, key)
            shown = derived.result()
        _set(mesh, COL, "FLOAT_COLOR", shown.col, "color")
        _set(mesh, SCALE, "FLOAT_VECTOR", shown.scale, "vector")
        _set(mesh, ROTATION, "QUATERNION", shown.rotation, "value")
        if hasattr(mesh, "color_attributes"):
            mesh.color_attributes.active_color_name = COL
        store_metadata(mesh, arrays, origin_cv)
        mesh.update()
    except BaseException:
        bpy.data.meshes.remove(mesh)
        raise
    return mesh


def store_metadata(data: bpy.types.ID, arrays: splat.SplatArrays, origin_cv: np.ndarray) -> None:
    """What export needs to write the file back, as custom properties of the mesh or point cloud."""
    data[PROP_ORIGIN] = [float(v) for v in origin_cv]
    data[PROP_KINDS] = json.dumps({arrays.attribute_name(name): kind for name, kind in arrays.kinds.items()})
    data[PROP_ELEMENTS] = arrays.elements_json
    if arrays.ply_names:
        data[PROP_PLY_NAMES] = json.dumps(arrays.ply_names)


def stored_color_space(data: bpy.types.ID) -> int | None:
    """The ``color_space`` element kept by :func:`store_metadata` (None when the file had none)."""
    for name, array in splat.elements_from_json(data.get(PROP_ELEMENTS, "[]")):
        if name == "color_space" and array.dtype.names and len(array):
            return int(array[array.dtype.names[0]][0])
    return None


def cloud_attributes(arrays: splat.SplatArrays) -> tuple[splat.SplatArrays, np.ndarray, list[Attribute]]:
    """The origin and native point-cloud attributes of ``splat.read(path, check_finite=False)``'s arrays.

    The rows are checked for NaN / infinite values in the one pass that makes the attributes; only a file
    that has some is read a second time, without them. Returns the (checked) arrays, origin, attributes.
    """
    origin = placement.scene_centre(arrays.means_cv)
    try:
        return arrays, origin, native_attributes.cloud_attributes(arrays, origin)
    except splat.NonFiniteRows:
        arrays = arrays.finite()
        origin = placement.scene_centre(arrays.means_cv)
        return arrays, origin, native_attributes.cloud_attributes(arrays, origin)


def build_cloud(
    cloud: bpy.types.PointCloud, arrays: splat.SplatArrays, origin_cv: np.ndarray, attributes: list[Attribute]
) -> bpy.types.PointCloud:
    """Fill ``cloud`` (native_cloud.new_cloud of ``arrays.count`` points) with :func:`cloud_attributes`'
    attributes and give it the metadata :func:`build_mesh` stores (Blender >= 5.3). On failure the caller
    removes it with the rest of the import."""
    native_cloud.fill_cloud(cloud, attributes)
    store_metadata(cloud, arrays, origin_cv)
    return cloud


def is_splat_object(obj: bpy.types.Object | None) -> bool:
    """A splat object made by this add-on (a mesh or a native point cloud with the export metadata)."""
    return obj is not None and obj.type in ("MESH", "POINTCLOUD") and PROP_KINDS in obj.data


def splat_count(obj: bpy.types.Object) -> int:
    data = obj.data
    return len(data.points) if obj.type == "POINTCLOUD" else len(data.vertices)


def default_display() -> str:
    """Native Gaussians where this Blender draws them, else the point display."""
    return native_cloud.DISPLAY_GAUSSIANS if native_cloud.supported() else native_cloud.DISPLAY_POINTS


def camera_world(context: bpy.types.Context, mode: str) -> np.ndarray:
    """matrix_world for the new camera: at the origin or at the 3D cursor, looking along +Y."""
    if mode == "CURSOR":
        return from_matrix(context.scene.cursor.matrix) @ placement.default_camera_matrix()
    if mode != "ORIGIN":
        raise ValueError(f"unknown placement {mode!r}; expected ORIGIN or CURSOR")
    return placement.default_camera_matrix()


def import_ply(
    context: bpy.types.Context,
    path: str | os.PathLike[str],
    placement_mode: str = "ORIGIN",
    photo: str | os.PathLike[str] | None = None,
    name: str | None = None,
    make_camera: bool = True,
    display_mode: str | None = None,
) -> ImportResult:
    """Import one 3DGS PLY as a splat object (plus a camera when the PLY knows its intrinsics).

    Args:
        context: a context with a scene; objects go into the scene's active collection.
        path: the PLY file.
        placement_mode: ``ORIGIN`` or ``CURSOR`` (see :data:`PLACEMENTS`).
        photo: the source photo, shown as the camera's background image.
        name: object name (default: the PLY's stem).
        make_camera: create the matching camera and set the scene's resolution.
        display_mode: ``GAUSSIANS`` (a native Gaussian point cloud, Blender >= 5.3) or ``POINTS``
            (a mesh with the Geometry Nodes point display); default: Gaussians where supported.

    Raises:
        ply.PlyError: the file is not a readable 3DGS PLY. Nothing is created in that case.
        ValueError: Gaussians were asked for on a Blender that has none.
    """
    display_mode = display_mode or default_display()
    if display_mode == native_cloud.DISPLAY_GAUSSIANS and not native_cloud.supported():
        raise ValueError("this Blender has no native Gaussian splats (5.3 or later); import with Display: Points")
    t0 = time.perf_counter()
    path = Path(path)
    native = display_mode == native_cloud.DISPLAY_GAUSSIANS
    name = name or path.stem
    attributes: list[Attribute] = []
    cloud = None
    if native:  # NaN / infinite rows are found in the pass that makes the attributes
        arrays = splat.read(path, check_finite=False)
        cloud = native_cloud.new_cloud(name, arrays.count)  # first: the arrays reuse memory it frees
        try:
            arrays, origin, attributes = cloud_attributes(arrays)
            if arrays.count != len(cloud.points):  # splats with NaN / infinite values were left out
                cloud.resize(arrays.count)
        except BaseException:
            bpy.data.pointclouds.remove(cloud)
            raise
    else:
        arrays = splat.read(path)
        origin = placement.scene_centre(arrays.means_cv)
    created: list[bpy.types.ID] = [] if cloud is None else [cloud]
    try:
        # The file's extrinsic places the camera; the splats stay where the file puts them.
        poses = placement.import_poses(
            camera_world(context, placement_mode), arrays.camera.extrinsic if arrays.camera else None, origin
        )
        if cloud is not None:
            data: bpy.types.ID = build_cloud(cloud, arrays, origin, attributes)
        else:
            data = build_mesh(name, arrays, origin)
            created.append(data)
        data[PROP_SOURCE] = str(path)
        data[PROP_FRAME] = [float(v) for v in poses.frame.ravel()]
        obj = bpy.data.objects.new(name, data)
        created.append(obj)
        obj.matrix_world = to_matrix(poses.splat)
        cam_obj = None
        if make_camera and arrays.camera is not None:
            cam_obj = camera.create_camera(
                context, f"{name} Camera", arrays.camera.K, arrays.camera.image_size, to_matrix(poses.camera), photo
            )
            created.extend([cam_obj, cam_obj.data])
            obj[PROP_CAMERA] = cam_obj.name
        if not native:
            display.add_display(obj)
        collection = context.collection or context.scene.collection
        collection.objects.link(obj)
        if cam_obj is not None:
            collection.objects.link(cam_obj)
            camera.apply_render_settings(context.scene, arrays.camera.K, arrays.camera.image_size)
            context.scene.camera = cam_obj
        _make_active(context, obj)
    except BaseException:
        remove_ids(created)
        raise
    seconds = time.perf_counter() - t0
    logger.info("imported %s: %d splats in %.3f s", path.name, arrays.count, seconds)
    for warning in arrays.warnings:
        logger.warning("%s: %s", path.name, warning)
    return ImportResult(obj, cam_obj, seconds, list(arrays.warnings))


def _make_active(context: bpy.types.Context, obj: bpy.types.Object) -> None:
    view_layer = context.view_layer
    if view_layer is None:
        return
    for other in view_layer.objects:
        other.select_set(False)
    try:
        obj.select_set(True, view_layer=view_layer)
        view_layer.objects.active = obj
    except RuntimeError:  # the active collection is excluded from this view layer: nothing to select
        logger.debug("%s is not in view layer %s", obj.name, view_layer.name)


def remove_ids(ids: list[bpy.types.ID]) -> None:
    """Remove datablocks made by a failed import, newest first."""
    for block in reversed(ids):
        try:
            if isinstance(block, bpy.types.Object):
                bpy.data.objects.remove(block)
            elif isinstance(block, bpy.types.Mesh):
                bpy.data.meshes.remove(block)
            elif native_cloud.supported() and isinstance(block, bpy.types.PointCloud):
                bpy.data.pointclouds.remove(block)
            elif isinstance(block, bpy.types.Camera):
                bpy.data.cameras.remove(block)
        except ReferenceError:
            pass  # already removed together with its owner
