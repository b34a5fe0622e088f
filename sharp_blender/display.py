"""How splats look in Blender: a Geometry Nodes modifier (Mesh to Points) and an emission material.

The node group turns each vertex into a point and drops points whose alpha is below ``Opacity
Threshold``. The material emits the ``Col`` attribute (scene-linear colour, so the Standard view
transform shows the photo's colours) and mixes in a Transparent BSDF by its alpha. Both are built in
code once per file and shared by every splat object; a version number in their names lets a newer
add-on build new ones.

Every splat shows as the same view-facing disc of radius ``Point Size × max(scale)`` in every engine.
The engines draw a point differently: Cycles intersects a sphere, EEVEE a camera-facing diamond
whose corners touch the sphere's outline (64 % of its disc, which made EEVEE renders 10 levels
darker). So the point is made ``DISC_COVER`` (√2) times larger than the disc, which is then the
diamond's inscribed circle, and the material cuts the disc itself out of either shape: it is
transparent where the distance from the point's centre across the view ray exceeds the disc radius.
No render-engine switch is needed, so viewport, F12 and scripted renders all agree.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import bpy

logger = logging.getLogger(__name__)

GROUP_NAME = "SHARP Splats v2"
MATERIAL_NAME = "SHARP Splat v2"
MODIFIER_NAME = "SHARP Splats"
POINT_SIZE = "Point Size"
OPACITY_THRESHOLD = "Opacity Threshold"
DEFAULT_POINT_SIZE = 1.25  # measured: best mean PSNR over compact and soft scenes, three views (issue 11)
DEFAULT_OPACITY_THRESHOLD = 0.02
# Shown under the Points settings: discs of constant alpha only approximate soft Gaussians.
POINTS_NOTE = ("Points are flat discs, an approximation.", "Render Preview shows the exact splats.")
# The drawn point's radius over the disc's: EEVEE's diamond of radius R holds a disc of radius R/√2.
DISC_COVER = math.sqrt(2.0)


def _output(node: bpy.types.Node, name: str) -> bpy.types.NodeSocket:
    """The enabled output called ``name`` (some nodes keep one hidden socket per data type)."""
    for socket in node.outputs:
        if socket.name == name and socket.enabled:
            return socket
    raise KeyError(f"{node.bl_idname} has no enabled output {name!r}")


def _named_attribute(nodes: Any, data_type: str, name: str, location: tuple[float, float]) -> bpy.types.Node:
    node = nodes.new("GeometryNodeInputNamedAttribute")
    node.data_type = data_type
    node.inputs["Name"].default_value = name
    node.location = location
    return node


def ensure_node_group() -> bpy.types.NodeTree:
    group = bpy.data.node_groups.get(GROUP_NAME)
    if group is not None:
        return group
    group = bpy.data.node_groups.new(GROUP_NAME, "GeometryNodeTree")
    iface = group.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    size = iface.new_socket(POINT_SIZE, in_out="INPUT", socket_type="NodeSocketFloat")
    size.default_value, size.min_value, size.max_value = DEFAULT_POINT_SIZE, 0.0, 100.0
    size.description = "Disc radius as a multiple of each splat's largest scale (standard deviation)"
    threshold = iface.new_socket(OPACITY_THRESHOLD, in_out="INPUT", socket_type="NodeSocketFloat")
    threshold.default_value, threshold.min_value, threshold.max_value = DEFAULT_OPACITY_THRESHOLD, 0.0, 1.0
    threshold.description = "Splats less opaque than this are not shown"
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")

    nodes, links = group.nodes, group.links
    group_in = nodes.new("NodeGroupInput")
    group_in.location = (-900, 0)
    group_out = nodes.new("NodeGroupOutput")
    group_out.location = (500, 0)

    # radius = DISC_COVER * Point Size * max(scale.x, scale.y, scale.z); the material cuts the disc out
    scale = _named_attribute(nodes, "FLOAT_VECTOR", "scale", (-900, -250))
    xyz = nodes.new("ShaderNodeSeparateXYZ")
    xyz.location = (-700, -250)
    max_xy = nodes.new("ShaderNodeMath")
    max_xy.operation = "MAXIMUM"
    max_xy.location = (-500, -250)
    max_xyz = nodes.new("ShaderNodeMath")
    max_xyz.operation = "MAXIMUM"
    max_xyz.location = (-330, -250)
    radius = nodes.new("ShaderNodeMath")
    radius.operation = "MULTIPLY"
    radius.location = (-160, -250)
    links.new(_output(scale, "Attribute"), xyz.inputs[0])
    links.new(xyz.outputs["X"], max_xy.inputs[0])
    links.new(xyz.outputs["Y"], max_xy.inputs[1])
    links.new(max_xy.outputs[0], max_xyz.inputs[0])
    links.new(xyz.outputs["Z"], max_xyz.inputs[1])
    links.new(max_xyz.outputs[0], radius.inputs[0])
    cover = nodes.new("ShaderNodeMath")
    cover.operation = "MULTIPLY"
    cover.inputs[1].default_value = DISC_COVER
    cover.location = (-330, -420)
    links.new(group_in.outputs[POINT_SIZE], cover.inputs[0])
    links.new(cover.outputs[0], radius.inputs[1])

    # selection = alpha(Col) >= Opacity Threshold
    colour = _named_attribute(nodes, "FLOAT_COLOR", "Col", (-900, 250))
    rgba = nodes.new("FunctionNodeSeparateColor")
    rgba.location = (-700, 250)
    keep = nodes.new("FunctionNodeCompare")
    keep.data_type = "FLOAT"
    keep.operation = "GREATER_EQUAL"
    keep.location = (-500, 250)
    links.new(_output(colour, "Attribute"), rgba.inputs[0])
    links.new(rgba.outputs["Alpha"], keep.inputs[0])
    links.new(group_in.outputs[OPACITY_THRESHOLD], keep.inputs[1])

    to_points = nodes.new("GeometryNodeMeshToPoints")
    to_points.mode = "VERTICES"
    to_points.location = (50, 0)
    links.new(group_in.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(_output(keep, "Result"), to_points.inputs["Selection"])
    links.new(radius.outputs[0], to_points.inputs["Radius"])

    set_material = nodes.new("GeometryNodeSetMaterial")
    set_material.location = (280, 0)
    set_material.inputs["Material"].default_value = ensure_material()
    links.new(to_points.outputs["Points"], set_material.inputs["Geometry"])
    links.new(set_material.outputs["Geometry"], group_out.inputs[0])
    return group


def ensure_material() -> bpy.types.Material:
    material = bpy.data.materials.get(MATERIAL_NAME)
    if material is not None:
        return material
    material = bpy.data.materials.new(MATERIAL_NAME)
    if bpy.app.version < (5, 0, 0):
        material.use_nodes = True  # always on (and deprecated) from 5.0
    tree = material.node_tree
    assert tree is not None
    tree.nodes.clear()
    attribute = tree.nodes.new("ShaderNodeAttribute")
    attribute.attribute_type = "GEOMETRY"
    attribute.attribute_name = "Col"
    attribute.location = (-600, 0)
    emission = tree.nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    emission.location = (-300, -100)
    transparent = tree.nodes.new("ShaderNodeBsdfTransparent")
    transparent.location = (-300, 100)
    mix = tree.nodes.new("ShaderNodeMixShader")
    mix.location = (-80, 0)
    output = tree.nodes.new("ShaderNodeOutputMaterial")
    output.location = (150, 0)
    tree.links.new(attribute.outputs["Color"], emission.inputs["Color"])
    alpha = tree.nodes.new("ShaderNodeMath")
    alpha.operation = "MULTIPLY"
    alpha.location = (-300, 300)
    tree.links.new(attribute.outputs["Alpha"], alpha.inputs[0])
    tree.links.new(_disc_mask(tree), alpha.inputs[1])
    tree.links.new(alpha.outputs[0], mix.inputs["Fac"])
    tree.links.new(transparent.outputs[0], mix.inputs[1])
    tree.links.new(emission.outputs[0], mix.inputs[2])
    tree.links.new(mix.outputs[0], output.inputs["Surface"])
    # EEVEE transparency: 4.2 introduced surface_render_method; older builds only have blend_method.
    if hasattr(material, "surface_render_method"):
        material.surface_render_method = "DITHERED"
    elif hasattr(material, "blend_method"):
        material.blend_method = "HASHED"
    material.diffuse_color = (0.8, 0.8, 0.8, 1.0)
    return material


def _disc_mask(tree: bpy.types.NodeTree) -> bpy.types.NodeSocket:
    """1 inside the view-facing disc of radius ``Radius / DISC_COVER`` around the point's centre, else 0.

    ``d = P - centre``; its squared distance from the view ray through the centre is
    ``|d|² - (d·I)²`` (``I`` the unit incoming vector), compared with the disc's squared radius.
    """
    nodes, links = tree.nodes, tree.links
    info = nodes.new("ShaderNodePointInfo")
    info.location = (-1400, 500)
    geometry = nodes.new("ShaderNodeNewGeometry")
    geometry.location = (-1400, 300)

    def node(kind: str, operation: str, x: float, y: float) -> bpy.types.Node:
        made = nodes.new(kind)
        made.operation = operation
        made.location = (x, y)
        return made

    offset = node("ShaderNodeVectorMath", "SUBTRACT", -1200, 400)
    links.new(geometry.outputs["Position"], offset.inputs[0])
    links.new(info.outputs["Position"], offset.inputs[1])
    along = node("ShaderNodeVectorMath", "DOT_PRODUCT", -1000, 500)
    links.new(offset.outputs[0], along.inputs[0])
    links.new(geometry.outputs["Incoming"], along.inputs[1])
    length2 = node("ShaderNodeVectorMath", "DOT_PRODUCT", -1000, 300)
    links.new(offset.outputs[0], length2.inputs[0])
    links.new(offset.outputs[0], length2.inputs[1])
    along2 = node("ShaderNodeMath", "MULTIPLY", -800, 500)
    links.new(_output(along, "Value"), along2.inputs[0])
    links.new(_output(along, "Value"), along2.inputs[1])
    across2 = node("ShaderNodeMath", "SUBTRACT", -620, 400)
    links.new(_output(length2, "Value"), across2.inputs[0])
    links.new(along2.outputs[0], across2.inputs[1])
    radius2 = node("ShaderNodeMath", "MULTIPLY", -800, 650)
    links.new(info.outputs["Radius"], radius2.inputs[0])
    links.new(info.outputs["Radius"], radius2.inputs[1])
    disc2 = node("ShaderNodeMath", "MULTIPLY", -620, 650)
    links.new(radius2.outputs[0], disc2.inputs[0])
    disc2.inputs[1].default_value = 1.0 / DISC_COVER**2
    inside = node("ShaderNodeMath", "LESS_THAN", -450, 500)
    links.new(across2.outputs[0], inside.inputs[0])
    links.new(disc2.outputs[0], inside.inputs[1])
    return inside.outputs[0]


def add_display(obj: bpy.types.Object) -> bpy.types.Modifier:
    """Give a splat object the display modifier (once) and the material."""
    modifier = obj.modifiers.get(MODIFIER_NAME)
    if modifier is None:
        modifier = obj.modifiers.new(MODIFIER_NAME, "NODES")
    modifier.node_group = ensure_node_group()  # type: ignore[attr-defined]
    material = ensure_material()
    data = obj.data
    if isinstance(data, bpy.types.Mesh) and material.name not in data.materials:
        data.materials.append(material)
    return modifier


def modifier(obj: bpy.types.Object | None) -> bpy.types.NodesModifier | None:
    if obj is None:
        return None
    found = obj.modifiers.get(MODIFIER_NAME)
    return found if isinstance(found, bpy.types.NodesModifier) and found.node_group is not None else None


def input_identifier(mod: bpy.types.NodesModifier, name: str) -> str:
    """The modifier key (``Socket_N``) of a node-group input, found by its name."""
    assert mod.node_group is not None
    for item in mod.node_group.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == name:
            return str(item.identifier)  # type: ignore[attr-defined]
    raise KeyError(f"the node group {mod.node_group.name} has no input {name!r}")


def input_property(mod: bpy.types.NodesModifier, name: str) -> tuple[Any, str]:
    """(owner, property path) of a modifier input, for ``layout.prop(owner, path)``.

    Up to 5.0 the values are ID properties of the modifier (``mod["Socket_2"]``); newer versions
    (checked with bpy 5.2) expose them as ``mod.properties.inputs.Socket_2.value``.
    """
    identifier = input_identifier(mod, name)
    inputs = getattr(getattr(mod, "properties", None), "inputs", None)
    if inputs is not None and hasattr(inputs, identifier):
        return getattr(inputs, identifier), "value"
    return mod, f'["{identifier}"]'


def set_input(obj: bpy.types.Object, name: str, value: float) -> None:
    mod = modifier(obj)
    if mod is None:
        raise ValueError(f"{obj.name} has no {MODIFIER_NAME} modifier; import it with SHARP first")
    owner, path = input_property(mod, name)
    if path == "value":
        owner.value = value
    else:
        owner[path[2:-2]] = value
    obj.update_tag()


def get_input(obj: bpy.types.Object, name: str) -> float:
    mod = modifier(obj)
    if mod is None:
        raise ValueError(f"{obj.name} has no {MODIFIER_NAME} modifier")
    owner, path = input_property(mod, name)
    return float(owner.value if path == "value" else owner[path[2:-2]])
