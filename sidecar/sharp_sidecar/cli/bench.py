"""`sharp bench`: the FP32 path and the fast path side by side, per stage, on one photo.

For each precision policy (fp32 first: it is the reference of the error figures) the model is loaded from a
checkpoint file (timed: checkpoint -> weights on the device), prepared (compile + warm-up, timed separately),
then one photo runs ``runs`` times after ``warmup`` untimed runs: decode, resize, encoder, decoders, composer,
unprojection, PLY write; the network forward alone is timed again with CUDA events. Each figure is a median.
Peak device memory is counted from before the load. The fast paths' Gaussians are compared with FP32's
(relative L2 of means, covariances, colours, opacities) and both are rendered along the default trajectory
(gsplat, or the torch fallback) for a per-frame PSNR.

Without ``-c`` the weights follow the reference rule (``make_weights.py``: per key, a crc32-seeded normal
draw scaled by the key's kind) and are written to a temporary checkpoint first, so the load is timed from a
real file. ``--smoke`` is a seconds-long CPU run of the tiny preset, for CI.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_state_dict_file
from ..gaussians import Gaussians, disparity_quantiles, vertex_columns
from ..image import imageio
from ..inference import fastpath
from ..inference.pipeline import predict, preprocess, resolve_device, save_prediction
from ..inference.precision import Precision, get_precision, inference_mode
from ..io import ply
from .bench_reference import reference_state_dict, relative_errors, synthetic_photo
from .bench_table import PHOTO_STAGES, format_table

logger = logging.getLogger(__name__)

GIB = 1024**3


class Timer:
    """Wall time of finished device work: synchronises before reading the clock."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - start, out


@dataclass
class PathResult:
    """Everything measured for one precision policy (seconds, bytes)."""

    precision: str
    load_s: float = 0.0
    prepare_s: float = 0.0
    first_call_s: float = 0.0
    stages: dict[str, list[float]] = field(default_factory=dict)
    forward: list[float] = field(default_factory=list)
    photo_to_gaussians: list[float] = field(default_factory=list)
    photo_to_ply: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    peak_forward_bytes: int = 0
    weights_bytes: int = 0
    gaussians: Gaussians | None = None
    image_size: tuple[int, int] = (0, 0)
    f_px: float = 0.0
    batch_images_per_s: float = 0.0
    ply_parts: dict[str, float] = field(default_factory=dict)
    decoder: str = "Pillow"
    decode_difference: tuple[float, int] | None = None  # nvJPEG against Pillow: mean and max |Δ| in levels

    def medians(self) -> dict[str, Any]:
        med = statistics.median
        out: dict[str, Any] = {f"stage_{k}_s": med(v) for k, v in self.stages.items() if v}
        for name in ("forward", "photo_to_gaussians", "photo_to_ply"):
            values = getattr(self, name)
            if values:
                out[f"{name}_s"] = med(values)
                out[f"{name}_runs_s"] = values
        out.update(
            load_s=self.load_s,
            prepare_s=self.prepare_s,
            first_call_s=self.first_call_s,
            peak_gib=self.peak_bytes / GIB,
            peak_forward_gib=self.peak_forward_bytes / GIB,
            weights_gib=self.weights_bytes / GIB,
            batch_images_per_s=self.batch_images_per_s,
            decoder=self.decoder,
        )
        if self.decode_difference is not None:
            out["decode_difference_levels"] = {"mean": self.decode_difference[0], "max": self.decode_difference[1]}
        out.update({f"stage_ply_{name}_s": value for name, value in self.ply_parts.items()})
        return out


def _reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0


def time_forward(model: Any, precision: Precision, image: torch.Tensor, factor: torch.Tensor, runs: int) -> list[float]:
    """The network alone (photo already resized on the device): CUDA events, one pair per run."""
    device = image.device
    times = []
    with inference_mode(precision, device):
        for _ in range(runs):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(image, factor)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1000.0)
            else:
                begin = time.perf_counter()
                model(image, factor)
                times.append(time.perf_counter() - begin)
    return times


def time_ply_parts(prediction: Any, folder: Path, runs: int, timer: Timer) -> dict[str, float]:
    """The PLY stage split: vertex table (GPU math + copy to the host), disparity quantiles, the file write
    (a new file), and the same write replacing an existing PLY (ext4 starts writing a file back when it is
    renamed over another, which costs that write several times more on a slow disk)."""
    parts: dict[str, list[float]] = {"columns": [], "quantiles": [], "write": [], "write_replacing": []}
    g = prediction.gaussians
    for i in range(max(1, runs)):
        columns_s, vertex = timer(lambda: vertex_columns(g))
        quantiles_s, quantiles = timer(lambda: [float(v) for v in disparity_quantiles(g)])
        extra = ply.sharp_metadata(prediction.f_px, prediction.image_size, len(vertex), quantiles)
        new_path, replaced = folder / f"part-{i}.ply", folder / "replaced.ply"
        write_s, _ = timer(lambda v=vertex, e=extra, p=new_path: ply.write_ply(p, v, e))  # type: ignore[misc]
        new_path.replace(replaced)  # untimed: now there is a file to replace
        replace_s, _ = timer(lambda v=vertex, e=extra, p=replaced: ply.write_ply(p, v, e))  # type: ignore[misc]
        for name, value in (
            ("columns", columns_s),
            ("quantiles", quantiles_s),
            ("write", write_s),
            ("write_replacing", replace_s),
        ):
            parts[name].append(value)
    return {name: statistics.median(values) for name, values in parts.items()}


def time_batch(model: Any, precision: Precision, photo: Path, count: int, out_dir: Path) -> float:
    """Images per second of ``sharp predict`` on a folder (decode ahead, write behind): ``count`` copies."""
    from types import SimpleNamespace

    from ..inference.batch import predict_many

    folder = out_dir / f"batch-{precision.name}"
    folder.mkdir(exist_ok=True)
    jobs = [(photo, folder / f"{i}.ply") for i in range(count)]
    start = time.perf_counter()
    items = list(predict_many(SimpleNamespace(model=model, precision=precision), jobs))
    elapsed = time.perf_counter() - start
    errors = [item.error for item in items if item.error is not None]
    if errors:
        raise RuntimeError(f"batch run failed: {errors[0]}") from errors[0]
    return count / elapsed


def profile_forward(model: Any, precision: Precision, image: torch.Tensor, factor: torch.Tensor, path: Path) -> None:
    """torch.profiler over one forward: the kernels by total CUDA time, written to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    with inference_mode(precision, image.device), profile(activities=[ProfilerActivity.CUDA]) as prof:
        model(image, factor)
        torch.cuda.synchronize(image.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=60, max_name_column_width=90))
    # The same forward by operator and input shape: which layer a copy or an element-wise pass belongs to.
    with (
        inference_mode(precision, image.device),
        profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof,
    ):
        model(image, factor)
        torch.cuda.synchronize(image.device)
    table = prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cuda_time_total", row_limit=50, max_name_column_width=50, max_shapes_column_width=110
    )
    path.with_name(path.stem + "-shapes.txt").write_text(table)


def run_path(
    checkpoint: Path,
    photo_path: Path,
    precision: Precision,
    device: torch.device,
    runs: int,
    warmup: int,
    out_dir: Path,
    profile_dir: Path | None = None,
    batch: int = 0,
) -> PathResult:
    """Load, prepare and time one precision policy; keeps its last Gaussians (on the CPU) for comparison."""
    result = PathResult(precision.name)
    timer = Timer(device)
    _reset_memory(device)

    def load() -> Any:
        state_dict = load_state_dict_file(checkpoint)
        return fastpath.load_predictor(state_dict, device, precision, source=str(checkpoint))

    result.load_s, model = timer(load)
    result.weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    precision, result.prepare_s = fastpath.prepare(model, precision)
    if not precision.compile and result.prepare_s:
        result.precision += " (compile failed: eager)"
    ply_dir = out_dir / f"plys-{precision.name}"
    ply_dir.mkdir(exist_ok=True)
    decode_on = precision.decode_device(device)

    def photo_to_ply(ply_path: Path) -> tuple[dict[str, float], Any]:
        begin = time.perf_counter()
        photo = imageio.load_rgb(photo_path, device=decode_on)
        decode_s = time.perf_counter() - begin
        result.decoder = "nvJPEG" if isinstance(photo.rgb, torch.Tensor) else "Pillow"
        prediction = predict(model, photo.rgb, photo.f_px, precision=precision)
        to_gaussians = time.perf_counter() - begin
        save_prediction(prediction, ply_path)
        stages = {"decode": decode_s, **prediction.timings, "photo_to_gaussians": to_gaussians}
        return stages, prediction

    for i in range(warmup + runs):
        if device.type == "cuda" and i == warmup:
            torch.cuda.reset_peak_memory_stats(device)
        ply_path = ply_dir / f"{i}.ply"  # a new file each run, as for a new photo (replacing one: ply_parts)
        total, (stages, prediction) = timer(lambda p=ply_path: photo_to_ply(p))  # type: ignore[misc]
        ply_path.unlink()
        if i == 0:
            result.first_call_s = total
        if i < warmup:
            continue
        for name in PHOTO_STAGES:
            result.stages.setdefault(name, []).append(stages.get(name, 0.0))
        result.photo_to_gaussians.append(stages["photo_to_gaussians"])
        result.photo_to_ply.append(total)
    result.peak_forward_bytes = _peak(device) if runs else 0
    photo = imageio.load_rgb(photo_path)  # Pillow's pixels: the error figures compare paths on the same input
    if decode_on is not None:
        decoded = imageio.load_rgb(photo_path, device=decode_on).rgb
        if isinstance(decoded, torch.Tensor):
            difference = np.abs(decoded.cpu().numpy().astype(np.int16) - np.asarray(photo.rgb, dtype=np.int16))
            result.decode_difference = (float(difference.mean()), int(difference.max()))
    prediction = predict(model, photo.rgb, photo.f_px, precision=precision)
    image, factor = preprocess(photo.rgb, photo.f_px, model.config.resolution, device)
    result.forward = time_forward(model, precision, image, factor, runs)
    result.ply_parts = time_ply_parts(prediction, ply_dir, runs, Timer(device))
    if batch > 1:
        result.batch_images_per_s = time_batch(model, precision, photo_path, batch, out_dir)
    if profile_dir is not None and device.type == "cuda" and precision.name != "fp32":
        profile_forward(model, precision, image, factor, profile_dir / f"profile-{precision.name}.txt")
    result.peak_bytes = max(_peak(device), result.peak_forward_bytes)
    result.gaussians = prediction.gaussians.to("cpu")
    result.image_size, result.f_px = prediction.image_size, prediction.f_px
    del prediction, image
    model = None  # frees the weights before the next path loads
    _reset_memory(device)
    return result


def render_psnr(
    fast: PathResult, ref: PathResult, device: torch.device, backend: str, frames: int | None
) -> dict[str, Any]:
    """Both scenes along the default trajectory (computed from the FP32 scene); PSNR of each sRGB frame."""
    from ..render import render
    from ..render.render_scene import scene_from_gaussians, scene_trajectory

    assert fast.gaussians is not None and ref.gaussians is not None
    scenes = [scene_from_gaussians(g, ref.image_size, ref.f_px, device) for g in (ref.gaussians, fast.gaussians)]
    traj = scene_trajectory(scenes[0])
    viewmats = traj.viewmats if frames is None else traj.viewmats[:: max(1, len(traj.viewmats) // frames)]
    start = time.perf_counter()
    images = []
    for scene in scenes:
        rasterizer = render.make_rasterizer(scene, backend if device.type == "cuda" else "torch")
        colour, _ = render.render_images(rasterizer, viewmats, traj.K, traj.width, traj.height)
        images.append(colour.astype(np.float64))
    mse = ((images[0] - images[1]) ** 2).reshape(len(viewmats), -1).mean(axis=1)
    psnr = 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))
    return {
        "backend": rasterizer.name,
        "frames": len(viewmats),
        "size": [traj.width, traj.height],
        "psnr_min_db": float(psnr.min()),
        "psnr_mean_db": float(psnr.mean()),
        "psnr_per_frame_db": [round(float(v), 2) for v in psnr],
        "seconds": time.perf_counter() - start,
    }


def _checkpoint(args: argparse.Namespace, workdir: Path, preset: str) -> tuple[Path, float]:
    if args.checkpoint:
        return Path(args.checkpoint).expanduser(), 0.0
    start = time.perf_counter()
    path = workdir / f"refweights-{preset}.pt"
    torch.save(reference_state_dict(preset), path)
    return path, time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    """The ``sharp bench`` command: prints the table (last) and writes the JSON report."""
    smoke = bool(args.smoke)
    device = resolve_device("cpu" if smoke and args.device == "auto" else args.device)
    if device.type != "cuda" and not smoke:
        print("error: sharp bench needs a CUDA GPU (use --smoke for a tiny CPU run)", file=sys.stderr)
        return 2
    preset = "tiny" if smoke else args.preset
    runs = 1 if smoke else args.runs
    warmup = 0 if smoke else args.warmup
    names = [n.strip() for n in args.precisions.split(",") if n.strip()]
    if not names or names[0] != "fp32":
        names = ["fp32", *[n for n in names if n != "fp32"]]
    try:
        precisions = [get_precision(n) for n in names]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if device.type != "cuda":
        precisions = [
            p if not p.compile else get_precision("bf16-eager") if p.name == "bf16" else p for p in precisions
        ]
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "preset": preset,
        "runs": runs,
        "warmup": warmup,
        "paths": {},
    }
    with tempfile.TemporaryDirectory(prefix="sharp-bench-") as tmp:
        workdir = Path(tmp)
        checkpoint, report["weights_generate_s"] = _checkpoint(args, workdir, preset)
        size = (128, 96) if smoke else args.photo_size  # the CPU fallback renders at the photo's size
        photo = Path(args.image) if args.image else synthetic_photo(workdir / "photo.jpg", *size)
        report["photo"] = str(photo)
        results: list[PathResult] = []
        for precision in precisions:
            print(f"running {precision.name} ...", file=sys.stderr, flush=True)
            profile_dir = Path(args.profile) if args.profile else None
            try:
                batch = 2 if smoke else args.batch
                result = run_path(checkpoint, photo, precision, device, runs, warmup, workdir, profile_dir, batch)
            except Exception as exc:  # one broken path must not hide the others' figures
                if not results:
                    raise
                logger.exception("the %s path failed", precision.name)
                report["failed"] = {**report.get("failed", {}), precision.name: f"{type(exc).__name__}: {exc}"}
                _reset_memory(device)
                continue
            results.append(result)
            entry = result.medians()
            if results[0] is not result:
                assert result.gaussians is not None and results[0].gaussians is not None
                entry["errors"] = relative_errors(result.gaussians, results[0].gaussians)
                if not args.no_render:
                    frames = 2 if smoke else args.frames
                    entry["render"] = render_psnr(result, results[0], device, args.render_backend, frames)
            report["paths"][precision.name] = entry
            print(f"  {precision.name}: {json.dumps({k: v for k, v in entry.items() if not k.endswith('runs_s')})}",
                  file=sys.stderr, flush=True)  # fmt: skip
            if len(results) > 1:
                result.gaussians = None  # only FP32's are needed again
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(format_table(report))
    return 0
