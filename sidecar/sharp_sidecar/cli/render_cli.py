"""`sharp render -i PLY_OR_DIR -o DIR`: the reference's preview videos of Gaussian PLYs.

Defaults match the reference: the rotate_forward path, 60 frames at 30 fps, the input's resolution
(halved above 3000 px tall, made even). Outputs ``DIR/<stem>.mp4`` and ``DIR/<stem>.depth.mp4``, and
with ``--png`` the frames as ``DIR/<stem>_frames/frame_0001.png`` …

The argument parsing (:func:`add_render`) imports no torch; :func:`run` does.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from .common import common_options, lazy

logger = logging.getLogger(__name__)

TRAJECTORY_CHOICES = ("swipe", "shake", "rotate", "rotate_forward")


def _frames(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of frames, got {text!r}") from None
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"frames must be between 1 and 100000, got {value}")
    return value


def _resolution(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1920x1080, got {text!r}")
    width, height = int(parts[0]), int(parts[1])
    if not (2 <= width <= 16384 and 2 <= height <= 16384):
        raise argparse.ArgumentTypeError(f"resolution {width}x{height} is out of range (2..16384 per side)")
    return width, height


def add_render(subparsers: Any) -> None:
    """Register ``sharp render`` (called by :mod:`sharp_sidecar.cli.main`)."""
    p = subparsers.add_parser(
        "render",
        parents=[common_options()],
        help="Gaussian PLY(s) -> preview videos (colour and depth)",
        description=(
            "Render the reference camera path around each PLY's source camera to an H.264 MP4 of colour and one "
            "of depth (Turbo colours). A folder means every *.ply directly inside it. gsplat renders on CUDA "
            "(its first use compiles kernels for a minute or two); elsewhere a slow plain-torch rasteriser does."
        ),
    )
    p.add_argument("-i", "--input", required=True, help="a .ply file or a folder of .ply files")
    p.add_argument("-o", "--output", required=True, help="folder for the videos")
    p.add_argument(
        "--trajectory",
        choices=TRAJECTORY_CHOICES,
        default="rotate_forward",
        help="camera path (default: rotate_forward)",
    )
    p.add_argument("--frames", type=_frames, default=60, help="number of frames (default: 60)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second of the videos (default: 30)")
    p.add_argument(
        "--resolution",
        type=_resolution,
        default=None,
        help="WIDTHxHEIGHT of the videos (default: the source image's size, halved above 3000 px tall, made even)",
    )
    p.add_argument("--png", action="store_true", help="also write every frame as a PNG")
    p.add_argument("--no-depth", action="store_true", help="skip the depth video")
    p.add_argument(
        "--device", choices=("auto", "cuda", "mps", "cpu"), default="auto", help="auto = cuda, else mps, else cpu"
    )
    p.add_argument(
        "--backend",
        choices=("auto", "gsplat", "torch"),
        default="auto",
        help="rasteriser: auto = gsplat on CUDA when installed, else the torch fallback",
    )
    p.set_defaults(handler=lazy(".render_cli:run"))


def find_plys(path: Path) -> list[Path]:
    """The PLY itself, or the ``*.ply`` files directly inside a folder (not recursive), sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() == ".ply" and p.is_file())
    return [path]


def run(args: argparse.Namespace) -> int:
    """The ``sharp render`` command. Returns 0 when every PLY rendered, 1 otherwise."""
    from tqdm import tqdm

    from .. import guards
    from ..errors import SharpError
    from ..io import trajectory
    from ..render import render, render_scene

    source = Path(args.input)
    if not source.exists():
        print(f"error: {source} does not exist; pass a .ply file or a folder of them", file=sys.stderr)
        return 2
    plys = find_plys(source)
    if not plys:
        print(f"error: no .ply file directly inside {source}", file=sys.stderr)
        return 2
    out_dir = Path(args.output)
    device = render.pick_device(args.device)
    params = trajectory.TrajectoryParams(type=args.trajectory, num_steps=args.frames)
    failed: list[str] = []
    try:
        guards.check_folder(out_dir)
    except SharpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in plys:
        begin = time.perf_counter()
        bar = tqdm(total=args.frames, desc=path.name, unit="frame", file=sys.stderr, leave=False)

        def progress(stage: str, fraction: float | None, message: str, bar: Any = bar) -> None:
            if stage == "render" and fraction is not None:
                bar.n = round(fraction * bar.total)
                bar.refresh()
            elif message:
                bar.set_postfix_str(message[:60])

        try:
            scene = render_scene.scene_from_ply(path, device)
            path_ = render_scene.scene_trajectory(scene, params, args.resolution)
            rasterizer = render.make_rasterizer(scene, args.backend, progress)
            outputs = render.RenderOutputs(
                video=out_dir / f"{path.stem}.mp4",
                depth_video=None if args.no_depth else out_dir / f"{path.stem}.depth.mp4",
                png_dir=out_dir / f"{path.stem}_frames" if args.png else None,
                fps=args.fps,
            )
            result = render.render_video(
                rasterizer, path_.viewmats, path_.K, path_.width, path_.height, outputs, progress
            )
        except Exception as exc:  # one bad PLY (or an unexpected fault) must not stop the others
            bar.close()
            failed.append(_render_failure(path, exc))
            print(f"error: {failed[-1]}", file=sys.stderr)
            continue
        bar.close()
        written = ", ".join(result.outputs.values())
        print(
            f"{path}: {result.frames} frames {result.width}x{result.height} ({result.backend} on {device}) "
            f"in {time.perf_counter() - begin:.1f} s -> {written}"
        )
    if failed and len(plys) > 1:
        print(f"{len(failed)} of {len(plys)} failed:", file=sys.stderr)
        for reason in failed:
            print(f"  {reason}", file=sys.stderr)
    return 1 if failed else 0


def _render_failure(path: Path, exc: Exception) -> str:
    """One PLY's failure as ``<file>: <what>``: typed errors as they are, PLY and file errors said plainly."""
    from ..errors import SharpError
    from ..guards import output_error, safe_name
    from ..io import ply

    if isinstance(exc, OSError):
        text = str(output_error(exc.filename or path, exc))
    elif isinstance(exc, SharpError | ply.PlyError):
        text = str(exc)
    else:
        logger.debug("rendering %s failed", path, exc_info=exc)
        text = f"unexpected {type(exc).__name__}: {exc}"
    name = safe_name(path)
    return text if name in text or str(path) in text else f"{name}: {text}"
