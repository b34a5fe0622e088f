"""Camera paths as keyframes, and sidecar-rendered previews of the active camera's animation.

Frames: a splat object's mesh holds ``p_cv − origin_cv`` (see :mod:`.importer`), so the *splat frame*
(the PLY's OpenCV frame, in which the sidecar renders) is ``obj.matrix_world @ T(−origin_cv)``.

* Add Camera Path: the reference trajectory's view matrices V (splat frame) become camera keyframes,
  ``camera.matrix_world = splat_frame @ V⁻¹ @ diag(1,−1,−1,1)``, one per frame of the scene range.
* Render Preview: for every frame, ``V = diag(1,−1,−1,1) @ camera.matrix_world⁻¹ @ splat_frame`` and
  K from the camera's lens, sensor, shift and the render size; the sidecar draws the PLY.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix

from . import camera, client, importer, jobs, placement, prefs
from .io import protocol, trajectory

logger = logging.getLogger(__name__)

PREVIEW_IMAGE = "SHARP Preview"


class PreviewError(RuntimeError):
    """Shown to the user as is."""


def is_splat(obj: bpy.types.Object | None) -> bool:
    return importer.is_splat_object(obj)


def find_splat(context: bpy.types.Context) -> bpy.types.Object:
    """The active splat object, else the one imported with the scene camera, else the scene's only splat."""
    active = context.active_object
    if active is not None and is_splat(active):
        return active
    splats = [o for o in context.scene.objects if is_splat(o)]
    cam = context.scene.camera
    if cam is not None:
        for obj in splats:
            if obj.get(importer.PROP_CAMERA) == cam.name or obj.get(importer.PROP_CAMERA) == cam.get("sharp_path_of"):
                return obj
    if len(splats) == 1:
        return splats[0]
    raise PreviewError(
        "select the splat object to preview (no splat object is active"
        + (f" and the scene has {len(splats)})" if splats else " and the scene has none: import or generate one)")
    )


def splat_frame(obj: bpy.types.Object) -> np.ndarray:
    """(4, 4) matrix from the PLY's OpenCV frame to the world."""
    origin = np.asarray(obj.data.get(importer.PROP_ORIGIN, (0.0, 0.0, 0.0)), dtype=np.float64)
    return importer.from_matrix(obj.matrix_world) @ placement.translation(-origin)


def splat_depths(obj: bpy.types.Object) -> np.ndarray:
    """(N,) z of every splat in the PLY's OpenCV frame (the source camera's depth), metres."""
    mesh = obj.data
    positions = np.empty(importer.splat_count(obj) * 3, dtype=np.float32)
    mesh.attributes["position"].data.foreach_get("vector", positions)
    origin_z = float(mesh.get(importer.PROP_ORIGIN, (0.0, 0.0, 0.0))[2])
    return positions[2::3] + np.float32(origin_z)


def photo_camera(context: bpy.types.Context, obj: bpy.types.Object) -> bpy.types.Object:
    """The camera imported with the splats, else the scene camera."""
    name = obj.get(importer.PROP_CAMERA)
    cam = bpy.data.objects.get(name) if name else None
    cam = cam if cam is not None and cam.type == "CAMERA" else context.scene.camera
    if cam is None or cam.type != "CAMERA":
        raise PreviewError(f"{obj.name} has no camera and the scene has none: add a camera first")
    return cam


def _world_to_basis(obj: bpy.types.Object, world: Matrix) -> Matrix:
    if obj.parent is None:
        return world
    return (obj.parent.matrix_world @ obj.matrix_parent_inverse).inverted() @ world


def keyframe_matrices(obj: bpy.types.Object, worlds: np.ndarray, first_frame: int) -> None:
    """Key location and rotation of ``obj`` to the given world matrices on consecutive frames.

    Eulers follow the previous frame (``to_euler(order, compat)``) so that the curves never jump by 2π.
    """
    mode = obj.rotation_mode
    previous = None
    for i, world in enumerate(worlds):
        basis = _world_to_basis(obj, importer.to_matrix(world))
        location, rotation, _scale = basis.decompose()
        frame = first_frame + i
        obj.location = location
        obj.keyframe_insert("location", frame=frame)
        if mode == "QUATERNION":
            if previous is not None and previous.dot(rotation) < 0:
                rotation.negate()
            obj.rotation_quaternion = rotation
            obj.keyframe_insert("rotation_quaternion", frame=frame)
            previous = rotation
        elif mode == "AXIS_ANGLE":
            axis, angle = rotation.to_axis_angle()
            obj.rotation_axis_angle = (angle, *axis)
            obj.keyframe_insert("rotation_axis_angle", frame=frame)
        else:
            euler = rotation.to_euler(mode, previous) if previous is not None else rotation.to_euler(mode)
            obj.rotation_euler = euler
            obj.keyframe_insert("rotation_euler", frame=frame)
            previous = euler


def add_camera_path(
    context: bpy.types.Context,
    splat_obj: bpy.types.Object,
    params: trajectory.TrajectoryParams,
    use_copy: bool = True,
) -> bpy.types.Object:
    """Keyframe the reference trajectory onto the photo's camera (or a copy) over the scene's frame range.

    ``params.num_steps`` is replaced by the number of frames in the range (over ``num_repeats``).

    Returns:
        The animated camera, which becomes the scene camera.
    """
    scene = context.scene
    cam = photo_camera(context, splat_obj)
    frames = scene.frame_end - scene.frame_start + 1
    if frames < 2:
        raise PreviewError(f"the scene's frame range has {frames} frame(s): set End after Start")
    steps, leftover = divmod(frames, params.num_repeats)
    if steps < 1 or leftover:
        raise PreviewError(f"{frames} frames cannot be split into {params.num_repeats} equal repeats")
    params = trajectory.TrajectoryParams(
        type=params.type,
        max_disparity=params.max_disparity,
        max_zoom=params.max_zoom,
        distance_m=params.distance_m,
        num_steps=steps,
        num_repeats=params.num_repeats,
    )
    K = camera.intrinsics(cam, scene)
    size = camera.render_size(scene)
    try:
        quantiles = trajectory.depth_quantiles(splat_depths(splat_obj))
    except ValueError as exc:
        raise PreviewError(f"{splat_obj.name}: {exc}") from exc
    path = trajectory.reference_trajectory(quantiles, size, float(K[0, 0]), params, render_wh=size)
    worlds = trajectory.camera_worlds_from_viewmats(path.viewmats, splat_frame(splat_obj))
    if use_copy:
        target = cam.copy()
        target.name = f"{cam.name} Path"
        target.animation_data_clear()
        target["sharp_path_of"] = cam.name
        for collection in cam.users_collection or (scene.collection,):
            collection.objects.link(target)
    else:
        target = cam
    if target.animation_data is not None and target.animation_data.action is not None:
        target.animation_data.action = None  # the path replaces earlier motion rather than mixing with it
    keyframe_matrices(target, worlds, scene.frame_start)
    scene.camera = target
    scene.frame_set(scene.frame_current)
    return target


def frame_cameras(
    context: bpy.types.Context, splat_obj: bpy.types.Object, cam: bpy.types.Object, frames: range
) -> tuple[np.ndarray, np.ndarray]:
    """View matrices (T, 4, 4) and intrinsics (T, 3, 3) of ``cam`` on each frame, relative to the splats.

    Evaluates the scene at each frame (so constraints, parents and animated lenses count), then returns
    to the current frame.
    """
    scene = context.scene
    current = scene.frame_current, scene.frame_subframe
    views, Ks = [], []
    try:
        for frame in frames:
            scene.frame_set(frame)
            cam_world = importer.from_matrix(cam.matrix_world)
            views.append(placement.FLIP @ np.linalg.inv(cam_world) @ splat_frame(splat_obj))
            Ks.append(camera.intrinsics(cam, scene))
    finally:
        scene.frame_set(current[0], subframe=current[1])
    return np.stack(views).astype(np.float32), np.stack(Ks).astype(np.float32)


def source_ply(splat_obj: bpy.types.Object, scratch: Path, from_mesh: bool = False) -> Path:
    """The PLY the splats came from; or a fresh export of the mesh when asked (``from_mesh``), when the
    file is gone, or when its point count differs from the mesh's."""
    source = splat_obj.data.get(importer.PROP_SOURCE)
    if not from_mesh and source and Path(source).is_file():
        from .io import ply

        try:
            vertex = ply.read_ply(source).vertex
            # A compressed source (packed_* properties) is not what the sidecar reads: export the mesh.
            count = vertex.shape[0] if "x" in (vertex.dtype.names or ()) else -1
        except (ply.PlyError, OSError):
            count = -1
        if count == importer.splat_count(splat_obj):
            return Path(source)
    from . import exporter

    path = scratch / f"{bpy.path.clean_name(splat_obj.name)}_preview_source.ply"
    exporter.export_ply(splat_obj, path, apply_transform=False)
    return path


def output_paths(context: bpy.types.Context, splat_obj: bpy.types.Object, single: bool) -> tuple[Path, Path]:
    """(colour MP4, PNG folder) in the add-on's output folder, named after the object and a time stamp."""
    folder = prefs.get(context).ply_dir() / "previews"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{bpy.path.clean_name(splat_obj.name)}_{'frame' if single else 'preview'}_{time.strftime('%Y%m%d-%H%M%S')}"
    return folder / f"{stem}.mp4", folder / f"{stem}_frames"


@dataclass
class RenderRun(jobs.SidecarRun):
    """One render request to the shared sidecar, polled on the main thread (or waited on in background)."""

    params: dict[str, Any]
    frames: int
    single: bool = False
    result: dict[str, Any] | None = None
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.result is not None or bool(self.error)

    def start(self, context: bpy.types.Context) -> None:
        self.job = jobs.get_client(context).submit(protocol.RENDER, self.params, **self._callbacks())

    def _job_done(self, context: bpy.types.Context, job: client.Job) -> None:
        if job.error is not None:
            self.error = jobs.describe(job.error)
        else:
            self.result = job.result

    def _show(self, context: bpy.types.Context) -> None:
        update_status(context, self)

    def run_blocking(self, context: bpy.types.Context, timeout: float | None = None) -> None:
        self.start(context)
        assert self.job is not None
        if not self.job._done.wait(timeout):
            self.cancel()
            raise PreviewError(f"the sidecar did not finish the preview within {timeout:g} s")
        while not self.poll(context):
            time.sleep(0.001)


def update_status(context: bpy.types.Context, run: RenderRun) -> None:
    status = getattr(context.window_manager, "sharp_status", None)
    if status is None:
        return
    status.busy = not run.finished
    status.progress = run.fraction
    status.stage = f"Preview: {run.stage}" if not run.finished else ""
    if run.finished:
        status.error = run.error
        status.message = "" if run.error else f"Preview written to {run.result.get('video', '')}"


def prepare_render(
    context: bpy.types.Context,
    single: bool = False,
    splat_obj: bpy.types.Object | None = None,
    from_mesh: bool = False,
) -> RenderRun:
    """The render request for the scene camera over the frame range (or the current frame only)."""
    scene = context.scene
    splat_obj = splat_obj or find_splat(context)
    cam = scene.camera
    if cam is None or cam.type != "CAMERA":
        raise PreviewError("the scene has no active camera: set one (or use Add Camera Path)")
    frames = (
        range(scene.frame_current, scene.frame_current + 1) if single else range(scene.frame_start, scene.frame_end + 1)
    )
    width, height = camera.render_size(scene)
    try:
        views, Ks = frame_cameras(context, splat_obj, cam, frames)
    except ValueError as exc:
        raise PreviewError(str(exc)) from exc
    video, png_dir = output_paths(context, splat_obj, single)
    ply_path = source_ply(splat_obj, Path(tempfile.gettempdir()), from_mesh)
    params: dict[str, Any] = {
        "ply": str(ply_path),
        "cameras": [{"viewmat": v.tolist(), "K": k.tolist()} for v, k in zip(views, Ks, strict=True)],
        "width": width,
        "height": height,
        "output": str(video),
        "fps": scene.render.fps / scene.render.fps_base,
        "device": prefs.get(context).device,
    }
    if single:  # one PNG, no video
        params["png_dir"] = str(png_dir)
        del params["output"]
    return RenderRun(params, len(frames), single)


def show_result(context: bpy.types.Context, run: RenderRun) -> bpy.types.Image | None:
    """Load the preview (the movie, or the single frame's PNG) as an image and show it in an Image Editor."""
    if run.result is None:
        return None
    if run.single:
        pngs = sorted(Path(run.result.get("png_dir", "")).glob("*.png"))
        path = pngs[0] if pngs else None
    else:
        path = Path(run.result["video"])
    if path is None or not path.is_file():
        return None
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is not None:
        bpy.data.images.remove(image)
    image = bpy.data.images.load(str(path))
    image.name = PREVIEW_IMAGE
    if not run.single:
        image.source = "MOVIE"
    for window in context.window_manager.windows if context.window_manager else ():
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image
                if not run.single:
                    area.spaces.active.image_user.frame_duration = run.frames
                return image
    return image
