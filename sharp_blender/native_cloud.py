"""Blender >= 5.3's native Gaussian splats: a ``PointCloud`` of type ``GAUSSIAN_SPLAT``, built from the
arrays already read (``PointCloud.resize`` + ``foreach_set``), and the per-object display switch.

The attribute arrays come from :mod:`.native_attributes` (pure). "Display: Points" turns the object into
today's mesh + Geometry Nodes point display (:mod:`.display`); "Gaussians" turns it back. Both keep
every PLY property, so export and the preview work in either.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import bpy
import numpy as np

from . import display, native_attributes, splat
from .native_attributes import Attribute

logger = logging.getLogger(__name__)

GAUSSIAN_SPLAT = "GAUSSIAN_SPLAT"
DISPLAY_GAUSSIANS, DISPLAY_POINTS = "GAUSSIANS", "POINTS"
DISPLAY_ITEMS = (
    (DISPLAY_GAUSSIANS, "Gaussians", "Blender's native 3D Gaussian splats (5.3 and later): the true look"),
    (DISPLAY_POINTS, "Points", "One sphere per splat (Geometry Nodes), as before Blender 5.3"),
)
# Derived attributes of the two displays; export never reads them, so they are rebuilt on a switch.
_GAUSSIAN_ONLY = (native_attributes.RADIANCE_BASE,)
_POINTS_ONLY = ("Col",)


def supported() -> bool:
    """This Blender draws Gaussian point clouds (checked on the type's enum, not the version)."""
    cloud = getattr(bpy.types, "PointCloud", None)
    if cloud is None or "resize" not in cloud.bl_rna.functions:
        return False
    prop = cloud.bl_rna.properties.get("type")
    return prop is not None and GAUSSIAN_SPLAT in {item.identifier for item in prop.enum_items}


def set_attributes(data: bpy.types.ID, attributes: Iterable[Attribute]) -> None:
    """Create (or replace) point attributes and fill them with foreach_set."""
    for attribute in attributes:
        existing = data.attributes.get(attribute.name)
        if attribute.name == native_attributes.POSITION:
            target = existing
        else:
            if existing is not None:
                data.attributes.remove(existing)
            target = data.attributes.new(attribute.name, attribute.data_type, "POINT")
        target.data.foreach_set(attribute.key, np.ascontiguousarray(attribute.values).ravel())


def new_cloud(name: str, count: int) -> bpy.types.PointCloud:
    """An empty ``GAUSSIAN_SPLAT`` point cloud of ``count`` points.

    Make it before the attribute arrays: resizing frees ~13 MB of scratch memory per million points
    (already paged in) that the arrays then reuse.
    """
    cloud = bpy.data.pointclouds.new(name)
    try:
        cloud.resize(count)
        cloud.type = GAUSSIAN_SPLAT
    except BaseException:
        bpy.data.pointclouds.remove(cloud)
        raise
    return cloud


def fill_cloud(cloud: bpy.types.PointCloud, attributes: list[Attribute]) -> None:
    """Set the attributes (from :func:`native_attributes.cloud_attributes`), emptying the list as it goes."""
    attributes.reverse()
    while attributes:
        # Each array is freed as soon as Blender has its copy, so the allocator can hand that memory,
        # already paged in, to the next attribute: fresh pages cost more than the copy itself.
        set_attributes(cloud, [attributes.pop()])


def display_of(obj: bpy.types.Object | None) -> str | None:
    """GAUSSIANS or POINTS for a SHARP splat object, None for anything else."""
    if obj is None or obj.data is None:
        return None
    if obj.type == "POINTCLOUD" and getattr(obj.data, "type", None) == GAUSSIAN_SPLAT:
        return DISPLAY_GAUSSIANS
    if obj.type == "MESH":
        return DISPLAY_POINTS
    return None


def _read(data: bpy.types.ID, name: str, width: int, key: str, count: int) -> np.ndarray:
    out = np.empty(count * width, dtype=np.float32)
    data.attributes[name].data.foreach_get(key, out)
    return out.reshape(count, width) if width > 1 else out


def _columns(data: bpy.types.ID, names: Iterable[str], count: int) -> dict[str, np.ndarray]:
    return {name: _read(data, name, 1, "value", count) for name in names}


def _colour_columns(obj: bpy.types.Object, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The PLY's ``f_dc_0..2`` and ``opacity``: their attributes, else f_dc from ``radiance:base`` (exact copies)."""
    data = obj.data
    names = [f"f_dc_{i}" for i in range(3)]
    base = None
    if not all(n in data.attributes for n in names) and native_attributes.RADIANCE_BASE in data.attributes:
        base = _read(data, native_attributes.RADIANCE_BASE, 4, "vector", count)
    missing = [n for n in (*names, "opacity") if n not in data.attributes and (base is None or n == "opacity")]
    if missing:
        raise ValueError(f"{obj.name} lost its {', '.join(missing)} attribute(s); re-import the PLY")
    f_dc = []
    for i, name in enumerate(names):
        if name in data.attributes or base is None:
            f_dc.append(_read(data, name, 1, "value", count))
        else:
            f_dc.append(np.ascontiguousarray(base[:, i]))
    return f_dc, _read(data, "opacity", 1, "value", count)


def _count(data: bpy.types.ID) -> int:
    return len(data.points) if hasattr(data, "points") else len(data.vertices)


def _convert(context: bpy.types.Context, obj: bpy.types.Object, target: str) -> None:
    """``object.convert`` in place (the object keeps its name, matrix, parent and custom properties)."""
    keep = dict(obj.data.items())
    with context.temp_override(active_object=obj, object=obj, selected_objects=[obj], selected_editable_objects=[obj]):
        result = bpy.ops.object.convert(target=target, keep_original=False)
    if result != {"FINISHED"}:
        raise RuntimeError(f"could not convert {obj.name} to {target.lower()}: {result}")
    for key, value in keep.items():
        obj.data[key] = value


def set_display(context: bpy.types.Context, obj: bpy.types.Object, mode: str, color_space: int | None) -> None:
    """Switch a SHARP splat object between native Gaussians and the Geometry Nodes point display.

    The derived attributes of the other display are rebuilt from the PLY properties (``f_dc_*``, which a
    native import keeps only in ``radiance:base``, ``opacity``, ``f_rest_*``) and the file's ``color_space``
    (importer.stored_color_space). Going to Points stores ``f_dc_*`` under their own names, as
    ``radiance:base`` is dropped; ``radiance:sh_k`` stay (export reads ``f_rest_*`` back from them).

    Raises:
        ValueError: Gaussians on a Blender without them, or an object that is not a SHARP splat object.
    """
    current = display_of(obj)
    if current is None:
        raise ValueError(f"{obj.name} is not a SHARP splat object; import or generate one first")
    if mode == current:
        return
    if mode == DISPLAY_GAUSSIANS and not supported():
        raise ValueError("this Blender has no native Gaussian splats (Blender 5.3 or later draws them)")
    data = obj.data
    count = _count(data)
    f_dc, opacity = _colour_columns(obj, count)
    rest = [f"f_rest_{i}" for i in range(native_attributes.sh_rest_count(list(data.attributes.keys())))]
    f_rest = _columns(data, rest, count)
    if mode == DISPLAY_POINTS:
        _convert(context, obj, "MESH")
        # A native import keeps f_dc_* only in radiance:base (exactly), which the points display drops.
        set_attributes(
            obj.data,
            [
                Attribute(f"f_dc_{i}", "FLOAT", "value", values)
                for i, values in enumerate(f_dc)
                if f"f_dc_{i}" not in obj.data.attributes
            ],
        )
        for name in _GAUSSIAN_ONLY:
            if name in obj.data.attributes:
                obj.data.attributes.remove(obj.data.attributes[name])
        col = splat.display_colour(f_dc, opacity, color_space)
        set_attributes(obj.data, [Attribute("Col", "FLOAT_COLOR", "color", col)])
        if hasattr(obj.data, "color_attributes"):
            obj.data.color_attributes.active_color_name = "Col"
        display.add_display(obj)
    else:
        modifier = obj.modifiers.get(display.MODIFIER_NAME)
        if modifier is not None:
            obj.modifiers.remove(modifier)  # else convert would realise the displayed spheres
        _convert(context, obj, "POINTCLOUD")
        obj.data.type = GAUSSIAN_SPLAT
        for name in _POINTS_ONLY:
            if name in obj.data.attributes:
                obj.data.attributes.remove(obj.data.attributes[name])
        base = native_attributes.radiance_base(f_dc, opacity, color_space)
        # Without f_rest_* attributes the object's radiance:sh_k (if any) already hold the bands.
        bands = native_attributes.sh_bands(f_rest)
        set_attributes(
            obj.data,
            [
                Attribute(native_attributes.RADIANCE_BASE, "FLOAT4", "vector", base),
                *(
                    Attribute(f"{native_attributes.SH_PREFIX}{k}", "FLOAT_VECTOR", "vector", b)
                    for k, b in enumerate(bands)
                ),
            ],
        )
        obj.data.materials.clear()
    obj.update_tag()
