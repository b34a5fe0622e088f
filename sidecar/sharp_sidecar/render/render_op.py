"""The sidecar's ``render`` op (see :mod:`sharp_sidecar.io.protocol`): cameras in, videos out.

Params:
    ``ply``           a PLY path; omitted or null = the last prediction of this sidecar (its Gaussians
                      when the predict op kept them in ``state["last_gaussians"]``, else its PLY).
                      Naming the last prediction's own PLY also uses the Gaussians in memory (until
                      the file changes).
    ``cameras``       list of ``{"viewmat": 4x4 world-to-camera (OpenCV, splat frame), "K": 3x3}``;
                      omitted = the reference path of ``trajectory`` (default rotate_forward) with
                      ``frames`` frames (default 60).
    ``width``, ``height``  frame size in pixels (required with ``cameras``; else the reference size).
    ``output``        the colour MP4 path (may be omitted when ``png_dir`` is given).
    ``depth_output``  the depth MP4 path; omitted = ``<output stem>.depth.mp4``; false or "" = none.
    ``png_dir``       a folder for a PNG per frame (optional); ``fps`` (default 30); ``device``
                      (auto|cuda|mps|cpu); ``backend`` (auto|gsplat|torch); ``batch`` cameras per call.

Result: ``video``, ``depth_video``, ``png_dir`` (those written), ``frames``, ``width``, ``height``,
``backend``, ``device``, ``timings``.

The scene stays on the render device between requests (keyed by the PLY's path, size and mtime, or by
the in-memory prediction), so re-rendering the same scene neither re-reads nor re-uploads it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadRequestError
from ..io import trajectory
from . import render, render_scene

logger = logging.getLogger(__name__)

_cache: dict[str, Any] = {"key": None, "source": None, "scene": None, "rasterizers": {}}


def _matrix(value: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRequestError(f"{what} must be a {shape[0]}x{shape[1]} list of numbers") from None
    if array.shape != shape or not np.all(np.isfinite(array)):
        raise BadRequestError(f"{what} must be a finite {shape[0]}x{shape[1]} matrix, got shape {array.shape}")
    return array


def parse_cameras(cameras: Any) -> tuple[np.ndarray, np.ndarray]:
    """The request's camera list -> ``(viewmats (T,4,4), Ks (T,3,3))`` float32, validated."""
    if not isinstance(cameras, list) or not cameras:
        raise BadRequestError("'cameras' must be a non-empty list of {viewmat, K}")
    views, Ks = [], []
    for i, cam in enumerate(cameras):
        if not isinstance(cam, dict):
            raise BadRequestError(f"cameras[{i}] must be an object with 'viewmat' and 'K'")
        view = _matrix(cam.get("viewmat"), (4, 4), f"cameras[{i}].viewmat")
        K = _matrix(cam.get("K"), (3, 3), f"cameras[{i}].K")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise BadRequestError(f"cameras[{i}].K needs positive focal lengths, got fx={K[0, 0]}, fy={K[1, 1]}")
        views.append(view)
        Ks.append(K)
    return np.stack(views).astype(np.float32), np.stack(Ks).astype(np.float32)


def _positive_int(params: dict[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequestError(f"'{name}' must be a positive whole number, got {value!r}")
    return value


def _same_file(a: str, b: str | None) -> bool:
    try:
        return b is not None and os.path.samefile(a, b)
    except OSError:
        return False


def _memory_scene(kept: dict[str, Any], device: Any) -> render_scene.RenderScene:
    # Identity, not id(): the cache holds the object, so a later prediction cannot reuse its id.
    key = f"memory:{device}"
    if _cache["key"] != key or _cache["source"] is not kept["gaussians"]:
        scene = render_scene.scene_from_gaussians(kept["gaussians"], tuple(kept["image_size"]), kept["f_px"], device)
        _remember(key, scene, kept["gaussians"])
    return _cache["scene"]  # type: ignore[no-any-return]


def _scene(ctx: Any, device: Any) -> render_scene.RenderScene:
    ply_path = ctx.params.get("ply")
    kept = ctx.state.get("last_gaussians")
    if ply_path in (None, ""):
        if kept is not None:
            return _memory_scene(kept, device)
        ply_path = ctx.state.get("last_ply")
        if not ply_path:
            raise BadRequestError("no 'ply' given and nothing was predicted yet: pass a PLY path")
    if not isinstance(ply_path, str):
        raise BadRequestError(f"'ply' must be a path string, got {type(ply_path).__name__}")
    try:
        stat = os.stat(ply_path)
    except OSError as exc:
        raise BadRequestError(f"cannot read the PLY {ply_path}: {exc.strerror or exc}") from exc
    if kept is not None and _same_file(ply_path, ctx.state.get("last_ply")):
        # The PLY the last predict wrote, while its Gaussians are still in memory: no re-read. If the
        # file changes later (size or mtime), it is read like any other.
        signature = (stat.st_size, stat.st_mtime_ns)
        seen = _cache.get("ply_signature")
        if seen is None or seen[0] is not kept["gaussians"]:
            seen = _cache["ply_signature"] = (kept["gaussians"], signature)
        if seen[1] == signature:
            return _memory_scene(kept, device)
    key = f"{Path(ply_path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{device}"
    if _cache["key"] != key:
        ctx.progress("load", None, f"reading {Path(ply_path).name}")
        _remember(key, render_scene.scene_from_ply(ply_path, device))
    return _cache["scene"]  # type: ignore[no-any-return]


def _remember(key: str, scene: render_scene.RenderScene, source: Any = None) -> None:
    # One scene at a time: a SHARP scene is ~70 MB on the device.
    _cache.update(key=key, source=source, scene=scene, rasterizers={})


def render_op(ctx: Any) -> dict[str, Any]:
    """``render``: see the module docstring. ``ctx`` is the server's JobContext."""
    params = ctx.params
    output = params.get("output") or None
    png_dir = params.get("png_dir") or None
    if not (output is None or isinstance(output, str)) or not (png_dir is None or isinstance(png_dir, str)):
        raise BadRequestError("'output' and 'png_dir' must be paths")
    if output is None and png_dir is None:
        raise BadRequestError("'output' is required: the path of the MP4 to write (or give 'png_dir' for PNGs only)")
    depth_param = params.get("depth_output")
    if depth_param is None:
        depth_output: Path | None = Path(output).with_suffix(".depth.mp4") if output else None
    elif depth_param is False or depth_param == "":
        depth_output = None
    elif isinstance(depth_param, str):
        depth_output = Path(depth_param)
    else:
        raise BadRequestError("'depth_output' must be a path, false or omitted")
    fps = params.get("fps", 30)
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= 240:
        raise BadRequestError(f"'fps' must be a number in (0, 240], got {fps!r}")
    backend = params.get("backend", "auto")
    if backend not in ("auto", "gsplat", "torch"):
        raise BadRequestError(f"'backend' must be auto, gsplat or torch, got {backend!r}")
    batch = _positive_int(params, "batch", render.DEFAULT_BATCH) or render.DEFAULT_BATCH
    width, height = _positive_int(params, "width", None), _positive_int(params, "height", None)

    device = render.pick_device(params.get("device"))
    ctx.check_cancelled("load")
    scene = _scene(ctx, device)
    if params.get("cameras") is not None:
        viewmats, Ks = parse_cameras(params["cameras"])
        if width is None or height is None:
            raise BadRequestError("'width' and 'height' are required with 'cameras'")
    else:
        kind = params.get("trajectory", trajectory.DEFAULT_TRAJECTORY)
        frames = _positive_int(params, "frames", 60) or 60
        try:
            traj_params = trajectory.TrajectoryParams(type=kind, num_steps=frames)
        except ValueError as exc:
            raise BadRequestError(str(exc)) from exc
        size = (width, height) if width and height else None
        path = render_scene.scene_trajectory(scene, traj_params, size)
        viewmats, Ks, width, height = path.viewmats, path.K[None], path.width, path.height

    rasterizer = _cache["rasterizers"].get(backend)
    if rasterizer is None:
        rasterizer = render.make_rasterizer(scene, backend, ctx.progress)
        _cache["rasterizers"][backend] = rasterizer
    outputs = render.RenderOutputs(
        video=Path(output) if output else None,
        depth_video=depth_output,
        png_dir=Path(png_dir) if png_dir else None,
        fps=float(fps),
    )
    result = render.render_video(
        rasterizer, viewmats, Ks, width, height, outputs, ctx.progress, ctx.cancelled, batch=batch
    )
    return {
        **result.outputs,
        "frames": result.frames,
        "width": result.width,
        "height": result.height,
        "backend": result.backend,
        "device": str(device),
        "timings": result.timings,
    }
