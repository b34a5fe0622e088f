#!/usr/bin/env python3
"""GPU check of the preview renderer, in one run on a CUDA machine with gsplat 1.5.3 installed.

(a) gsplat vs the plain-torch fallback on the same scene and cameras (target: PSNR >= 40 dB);
(b) a SHARP-sized scene (1,179,648 Gaussians), 60 frames at 1920x1080 of the reference rotate_forward
    path: render-only time per frame (batches of 8 and of 1), and end to end including encoding both
    videos (target <= 2 s), from Gaussians in GPU memory and from a PLY on disk.
Also: gsplat's JIT compile time, and the Turbo table against matplotlib's where it is installed.

The scenes are synthetic but SHARP-shaped (two layers of a 768x768 grid unprojected through a pinhole,
scales ~ depth/384, opacities 0.2-0.85), so they need no reference files. A short table is printed
last; the full numbers go to ``--out``/gpu_render_check.json.

    PYTHONPATH=/tmp/sidecar-site (after: python3 -m pip install --no-deps --no-build-isolation --target /tmp/sidecar-site ./sidecar) TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python scripts/gpu_render_check.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sharp_sidecar.io import conventions, ply, trajectory
from sharp_sidecar.render import colormap, render, render_scene

N_SIDE = 768  # SHARP's Gaussian grid per layer: 2 x 768 x 768 = 1,179,648


def synthetic_scene(width: int, height: int, side: int, device: str, seed: int = 0) -> render_scene.RenderScene:
    """A SHARP-shaped scene for a (width x height) photo with f = 1.1 x width: two layers of side x side."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    focal = 1.1 * width
    v, u = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    # Smooth depth field (a room: far wall, a nearer blob) plus noise; layer 1 sits behind layer 0.
    base = 6.0 - 3.0 * torch.exp(-((u - 0.2) ** 2 + (v + 0.1) ** 2) / 0.15) + 1.5 * v
    layers = []
    for layer in range(2):
        z = (base + 0.6 * layer + 0.05 * torch.randn(side, side, generator=g)).clamp_min(1.0)
        x = u * z * width / (2 * focal)
        y = v * z * height / (2 * focal)
        layers.append(torch.stack([x, y, z], -1).reshape(-1, 3))
    means = torch.cat(layers)
    n = means.shape[0]
    z = means[:, 2:3]
    axis = torch.tensor([width / (2 * focal), height / (2 * focal), 1.0])
    scales = z / 384 * axis * (0.5 + 1.5 * torch.rand(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opacities = 0.2 + 0.65 * torch.rand(n, generator=g)
    pattern = torch.stack(
        [0.5 + 0.5 * torch.sin(6 * u + 2 * v), 0.5 + 0.5 * torch.cos(5 * v - u), 0.5 + 0.4 * torch.sin(9 * u * v)], -1
    ).reshape(-1, 3)
    colors = conventions.srgb_to_linear(torch.cat([pattern, pattern.flip(0)]).clamp(0.01, 0.99))
    m, q, s, o, c = (t.float().contiguous().to(device) for t in (means, quats, scales, opacities, colors))
    return render_scene.RenderScene(m, q, s, o, c, image_wh=(width, height), focal_px=focal, source="synthetic")


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def sync() -> None:
    torch.cuda.synchronize()


def compare_backends(report: dict[str, Any]) -> None:
    """(a): the same cameras through gsplat and the fallback, on the GPU."""
    scene = synthetic_scene(640, 480, 256, "cuda", seed=1)
    path = render_scene.scene_trajectory(scene, trajectory.TrajectoryParams(num_steps=8))
    gs = render.make_rasterizer(scene, "gsplat")
    fb = render.make_rasterizer(scene, "torch")
    rows = []
    for name, views in (("rotate_forward", path.viewmats),):
        views_t = torch.from_numpy(views).cuda()
        Ks = torch.from_numpy(np.broadcast_to(path.K, (len(views), 3, 3)).copy()).cuda()
        with torch.no_grad():
            g_raw, g_alpha = gs.raw(views_t, Ks, path.width, path.height)
            start = time.perf_counter()
            f_raw, f_alpha = fb.raw(views_t, Ks, path.width, path.height)
            sync()
            fallback_s = (time.perf_counter() - start) / len(views)
        g_rgb, f_rgb = g_raw[..., :3].cpu().numpy(), f_raw[..., :3].cpu().numpy()
        g_u8 = render.to_srgb_u8(g_raw[..., :3]).cpu().numpy()
        f_u8 = render.to_srgb_u8(f_raw[..., :3]).cpu().numpy()
        g_depth = (g_raw[..., 3] / g_alpha[..., 0].clamp_min(1e-8)).cpu().numpy()
        f_depth = (f_raw[..., 3] / f_alpha[..., 0].clamp_min(1e-8)).cpu().numpy()
        dmax = float(g_depth.max())
        rows.append(
            {
                "path": name,
                "frames": len(views),
                "size": [path.width, path.height],
                "gaussians": scene.count,
                "psnr_linear_rgb_db": psnr(g_rgb, f_rgb, 1.0),
                "psnr_srgb_u8_db": psnr(g_u8, f_u8, 255.0),
                "psnr_alpha_db": psnr(g_alpha.cpu().numpy(), f_alpha.cpu().numpy(), 1.0),
                "psnr_depth_db": psnr(g_depth, f_depth, dmax),
                "max_abs_u8": int(np.abs(g_u8.astype(int) - f_u8).max()),
                "fallback_s_per_frame": fallback_s,
            }
        )
    report["compare"] = rows


def time_render(rast: render.Rasterizer, views: torch.Tensor, Ks: torch.Tensor, w: int, h: int, batch: int) -> float:
    """Median over 5 runs of the seconds per frame to rasterise all views (RGB+D, depth divided)."""
    runs = []
    for _ in range(6):
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(views), batch):
                rast.render(views[i : i + batch], Ks[i : i + batch], w, h)
        sync()
        runs.append((time.perf_counter() - start) / len(views))
    return statistics.median(runs[1:])


def benchmark(report: dict[str, Any], out: Path) -> None:
    """(b): 1,179,648 Gaussians, 60 frames at 1920x1080."""
    scene = synthetic_scene(1920, 1080, N_SIDE, "cuda")
    assert scene.count == 1_179_648
    path = render_scene.scene_trajectory(scene, trajectory.TrajectoryParams())
    assert (path.width, path.height) == (1920, 1080) and path.num_frames == 60
    views = torch.from_numpy(path.viewmats).cuda()
    Ks = torch.from_numpy(np.broadcast_to(path.K, (60, 3, 3)).copy()).cuda()
    rast = render.make_rasterizer(scene, "gsplat")
    bench: dict[str, Any] = {"gaussians": scene.count, "frames": 60, "size": [1920, 1080]}
    bench["render_ms_per_frame_batch8"] = 1000 * time_render(rast, views, Ks, 1920, 1080, 8)
    bench["render_ms_per_frame_batch1"] = 1000 * time_render(rast, views, Ks, 1920, 1080, 1)

    tmp = Path(tempfile.mkdtemp(prefix="render-bench-"))
    e2e = []
    result = None
    for i in range(5):
        outputs = render.RenderOutputs(video=tmp / f"v{i}.mp4", depth_video=tmp / f"v{i}.depth.mp4")
        sync()
        start = time.perf_counter()
        result = render.render_video(rast, path.viewmats, path.K, 1920, 1080, outputs)
        e2e.append(time.perf_counter() - start)
    bench["end_to_end_s_in_memory"] = statistics.median(e2e)
    bench["end_to_end_runs_s"] = e2e
    assert result is not None
    from sharp_sidecar.render.video import read_video_info

    bench["video_info"] = read_video_info(result.outputs["video"])
    bench["depth_video_info"] = read_video_info(result.outputs["depth_video"])
    bench["video_bytes"] = Path(result.outputs["video"]).stat().st_size

    # From a PLY on disk: read + upload + trajectory + render + encode (a fresh rasteriser; gsplat is compiled).
    ply_path = tmp / "scene.ply"
    write_scene_ply(scene, ply_path)
    from_ply = []
    for i in range(3):
        start = time.perf_counter()
        loaded = render_scene.scene_from_ply(ply_path, "cuda")
        traj = render_scene.scene_trajectory(loaded, trajectory.TrajectoryParams())
        outputs = render.RenderOutputs(video=tmp / f"p{i}.mp4", depth_video=tmp / f"p{i}.depth.mp4")
        render.render_video(render.make_rasterizer(loaded, "gsplat"), traj.viewmats, traj.K, 1920, 1080, outputs)
        from_ply.append(time.perf_counter() - start)
    bench["end_to_end_s_from_ply"] = statistics.median(from_ply)
    bench["ply_bytes"] = ply_path.stat().st_size
    # One frame of the fallback at full size, for scale.
    fb = render.make_rasterizer(scene, "torch")
    sync()
    start = time.perf_counter()
    with torch.no_grad():
        fb.render(views[:1], Ks[:1], 1920, 1080)
    sync()
    bench["fallback_s_per_frame_full"] = time.perf_counter() - start
    frames = render.render_images(rast, path.viewmats[::20], path.K, 1920, 1080)[0]
    from PIL import Image

    Image.fromarray(np.concatenate(list(frames), axis=1)).save(out / "bench_frames.jpg", quality=85)
    report["benchmark"] = bench


def write_scene_ply(scene: render_scene.RenderScene, path: Path) -> None:
    srgb = conventions.linear_to_srgb(scene.colors).cpu().numpy()
    f_dc = conventions.rgb_to_sh_dc(srgb)
    cols: dict[str, np.ndarray] = {}
    means = scene.means.cpu().numpy()
    for i, name in enumerate("xyz"):
        cols[name] = means[:, i]
    for i in range(3):
        cols[f"f_dc_{i}"] = f_dc[:, i]
    cols["opacity"] = conventions.logit(scene.opacities.cpu().numpy())
    log_scales = np.log(scene.scales.cpu().numpy())
    for i in range(3):
        cols[f"scale_{i}"] = log_scales[:, i]
    quats = scene.quats.cpu().numpy()
    for i in range(4):
        cols[f"rot_{i}"] = quats[:, i]
    vertex = ply.structured({k: np.asarray(v, np.float32) for k, v in cols.items()})
    assert scene.image_wh is not None and scene.focal_px is not None
    ply.write_ply(path, vertex, ply.sharp_metadata(scene.focal_px, scene.image_wh, scene.count, [0.1, 0.5]))


def turbo_vs_matplotlib(report: dict[str, Any]) -> None:
    try:
        from matplotlib import colormaps
    except ImportError:
        report["turbo"] = "matplotlib not installed"
        return
    ref = (colormaps["turbo"](np.arange(256) / 255.0)[:, :3] * 255).astype(np.uint8)
    diff = np.abs(ref.astype(int) - colormap.turbo_lut_u8().astype(int))
    report["turbo"] = {"max_abs_u8": int(diff.max()), "mean_abs_u8": float(diff.mean())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    report: dict[str, Any] = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    try:
        import gsplat

        report["gsplat"] = gsplat.__version__
    except ImportError:
        print("gsplat is not installed", file=sys.stderr)
        return 2
    scene = synthetic_scene(64, 48, 16, "cuda")
    start = time.perf_counter()
    render.make_rasterizer(scene, "gsplat", lambda s, f, m: print(f"[{s}] {m}", flush=True))
    report["gsplat_prepare_s"] = time.perf_counter() - start
    for name, step in (("compare", compare_backends), ("benchmark", lambda r: benchmark(r, args.out))):
        try:
            step(report)
        except Exception:
            report[f"{name}_error"] = traceback.format_exc()
            print(report[f"{name}_error"], file=sys.stderr)
    turbo_vs_matplotlib(report)
    (args.out / "gpu_render_check.json").write_text(json.dumps(report, indent=2, default=str))

    print("\n== gpu_render_check", report["gpu"], "torch", report["torch"], "gsplat", report["gsplat"])
    print(f"gsplat prepare (JIT compile on first use): {report['gsplat_prepare_s']:.1f} s")
    for row in report.get("compare", []):
        print(
            f"(a) gsplat vs fallback, {row['gaussians']:,} Gaussians, {row['frames']} frames {row['size'][0]}x{row['size'][1]}: "
            f"PSNR linear RGB {row['psnr_linear_rgb_db']:.1f} dB, sRGB u8 {row['psnr_srgb_u8_db']:.1f} dB, "
            f"alpha {row['psnr_alpha_db']:.1f} dB, depth {row['psnr_depth_db']:.1f} dB, max |u8 diff| {row['max_abs_u8']}"
        )
    b = report.get("benchmark")
    if b:
        print(f"(b) {b['gaussians']:,} Gaussians, {b['frames']} frames 1920x1080:")
        print(f"    render only, batch 8 : {b['render_ms_per_frame_batch8']:.2f} ms/frame")
        print(f"    render only, batch 1 : {b['render_ms_per_frame_batch1']:.2f} ms/frame")
        print(f"    end to end (in memory -> 2 MP4s): {b['end_to_end_s_in_memory']:.2f} s (target <= 2 s)")
        print(f"    end to end (PLY on disk -> 2 MP4s): {b['end_to_end_s_from_ply']:.2f} s")
        print(f"    fallback, one 1080p frame: {b['fallback_s_per_frame_full']:.2f} s; videos {b['video_info']}")
    print("turbo vs matplotlib:", report["turbo"])
    for key in ("compare_error", "benchmark_error"):
        if key in report:
            print(f"{key}: {report[key].strip().splitlines()[-1]}")
    return 0 if "compare_error" not in report and "benchmark_error" not in report else 1


if __name__ == "__main__":
    sys.exit(main())
