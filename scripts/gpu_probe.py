# ruff: noqa: B023  (the benchmark closures run inside their own loop iteration)
"""Micro-benchmarks behind the fast path's choices (GPU machine): each candidate beside what it would replace.

Usage (device machine, repo root): PYTHONPATH=/tmp/sidecar-site (after: python3 -m pip install --no-deps --no-build-isolation --target /tmp/sidecar-site ./sidecar) python3 scripts/gpu_probe.py [--only gelu,conv,unproject,jpeg,disk]

- gelu: the ViT's fc1 + exact GELU as Inductor runs it (cuBLAS GEMM, then a Triton GELU pass) against cuBLASLt's
  GELU epilogue (``torch._addmm_activation``, tanh form) and the bare GEMM.
- conv: decoder 3×3 convolutions (bf16, channels_last) with bias + ReLU: eager, compiled, cuDNN's fused
  ``cudnn_convolution_relu``; the bare convolution as the floor.
- unproject: the compiled float64 unprojection of 1,179,648 Gaussians, its kernels, and a float32 variant.
- jpeg: Pillow against nvJPEG (torchvision.io.decode_jpeg on the GPU) for 1536×1024 and 4032×3024 photos.
- disk: writing a 66 MB PLY-sized buffer: one write() against parallel pwrite()s, per folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

N_GAUSSIANS = 2 * 768 * 768
PLY_BYTES = 66_061_086


def cuda_ms(fn, runs: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def wall_ms(fn, runs: int = 7, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def probe_gelu() -> None:
    torch.manual_seed(0)
    m, k, n = 35 * 577, 1024, 4096
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(n, k, device="cuda") / k**0.5).bfloat16()
    b = (torch.randn(n, device="cuda") * 0.02).bfloat16()
    compiled = torch.compile(lambda x: F.gelu(F.linear(x, w, b)))
    epilogue = lambda x: torch._addmm_activation(b, x, w.t(), use_gelu=True)  # noqa: E731
    epilogue_compiled = torch.compile(epilogue)
    flops = 2 * m * k * n
    ref = F.gelu(F.linear(x.float(), w.float(), b.float()))
    for name, fn in [
        ("linear only", lambda: F.linear(x, w, b)),
        ("linear + gelu (compiled)", lambda: compiled(x)),
        ("addmm_activation gelu", lambda: epilogue(x)),
        ("addmm_activation gelu (compiled)", lambda: epilogue_compiled(x)),
    ]:
        ms = cuda_ms(fn)
        print(f"gelu  {name:34s} {ms:7.3f} ms  {flops / ms / 1e9:6.0f} TFLOP/s  rel err {rel(fn(), ref):.2e}")
    # fc2 + LayerScale + residual: compiled (GEMM, then one fused pass) against addmm with the residual as C.
    h = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    w2 = (torch.randn(k, n, device="cuda") / n**0.5).bfloat16()
    b2 = (torch.randn(k, device="cuda") * 0.02).bfloat16()
    g = (torch.rand(k, device="cuda") * 0.1).bfloat16()
    w2g, b2g = (w2.float() * g.float()[:, None]).bfloat16(), (b2.float() * g.float()).bfloat16()
    res = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    fc2_compiled = torch.compile(lambda h, r: r + g * F.linear(h, w2, b2))
    for name, fn in [
        ("fc2 linear only", lambda: F.linear(h, w2, b2)),
        ("fc2 + ls + residual (compiled)", lambda: fc2_compiled(h, res)),
        ("addmm(res + b, h, w2g^T)", lambda: torch.addmm(res + b2g, h, w2g.t())),
    ]:
        print(f"fc2   {name:34s} {cuda_ms(fn):7.3f} ms")


def probe_conv() -> None:
    torch.manual_seed(0)
    for cin, cout, size in [(256, 256, 768), (128, 128, 768), (256, 256, 384), (128, 64, 768), (128, 32, 1536)]:
        x = torch.randn(1, cin, size, size, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        w = (torch.randn(cout, cin, 3, 3, device="cuda") / (9 * cin) ** 0.5).bfloat16()
        w = w.to(memory_format=torch.channels_last)
        b = (torch.randn(cout, device="cuda") * 0.02).bfloat16()
        z = torch.randn(1, cout, size, size, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
        compiled = torch.compile(lambda x: F.relu(F.conv2d(x, w, b, 1, 1)))
        compiled_res = torch.compile(lambda x, z: z + F.conv2d(F.relu(x), w, b, 1, 1))
        flops = 2 * size * size * cout * cin * 9
        ref = F.relu(F.conv2d(x.float(), w.float(), b.float(), 1, 1))
        cases = [
            ("conv only", lambda: F.conv2d(x, w, None, 1, 1), None),
            ("conv+bias+relu eager", lambda: F.relu(F.conv2d(x, w, b, 1, 1)), ref),
            ("conv+bias+relu compiled", lambda: compiled(x), ref),
            ("relu(x) conv + bias + z compiled", lambda: compiled_res(x, z), None),
        ]
        try:
            fused = lambda: torch.cudnn_convolution_relu(x, w, b, (1, 1), (1, 1), (1, 1), 1)  # noqa: E731
            fused()
            cases.append(("cudnn_convolution_relu", fused, ref))
        except Exception as exc:
            print(f"conv  cudnn_convolution_relu unavailable: {type(exc).__name__}: {str(exc)[:120]}")
        for name, fn, reference in cases:
            ms = cuda_ms(fn)
            err = f"rel err {rel(fn(), reference):.2e}" if reference is not None else ""
            print(f"conv  {cin}->{cout}@{size}² {name:34s} {ms:7.3f} ms {flops / ms / 1e9:6.0f} TFLOP/s {err}")


def probe_unproject() -> None:
    from sharp_sidecar import gaussians as G

    torch.manual_seed(0)
    means = torch.randn(1, N_GAUSSIANS, 3, device="cuda")
    svals = torch.rand(1, N_GAUSSIANS, 3, device="cuda") * 0.1 + 1e-4
    quats = torch.randn(1, N_GAUSSIANS, 4, device="cuda")
    A = G.unprojection_matrix(1200.0, (1536, 1024)).cuda()
    diagonal = A.diagonal().contiguous()  # what unproject() passes to the compiled function
    compiled = G._compiled_unproject()
    print(f"unproj compiled float64              {wall_ms(lambda: compiled(means, svals, quats, diagonal)):7.3f} ms")
    ref = compiled(means, svals, quats, diagonal)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        compiled(means, svals, quats, diagonal)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=70))

    def as_float32(means: torch.Tensor, svals: torch.Tensor, quats: torch.Tensor, A: torch.Tensor):
        R = G.quaternion_to_matrix(quats)
        cov = A @ ((R * svals[..., None, :].square()) @ R.transpose(-1, -2)) @ A.T
        flat = cov.reshape(-1, 3, 3)
        scales, q = G._factors(G.symmetric_eigen, (flat + flat.transpose(-1, -2)) / 2)
        return means @ A.T, scales.reshape(1, -1, 3), q.reshape(1, -1, 4)

    f32 = torch.compile(as_float32, dynamic=False)
    print(f"unproj compiled float32              {wall_ms(lambda: f32(means, svals, quats, A)):7.3f} ms")
    out = f32(means, svals, quats, A)
    print(
        f"unproj float32 vs float64: scales rel {rel(out[1], ref[1]):.2e}, |q·q'| min "
        f"{float((out[2] * ref[2]).sum(-1).abs().min()):.6f}"
    )
    print(
        f"unproj eager closed form float64     {wall_ms(lambda: G.unproject(G.Gaussians(means, svals, quats, means, svals[..., 0]), 1200.0, (1536, 1024)), runs=3):7.3f} ms"
    )


def probe_jpeg() -> None:
    from PIL import Image
    from sharp_sidecar.cli import bench_reference as bench
    from sharp_sidecar.image import imageio

    try:
        import torchvision
        from torchvision.io import decode_jpeg
    except ImportError as exc:
        print("jpeg  torchvision missing:", exc)
        return
    print("jpeg  torchvision", torchvision.__version__)
    folder = Path(tempfile.mkdtemp())
    for width, height in [(1536, 1024), (4032, 3024)]:
        path = bench.synthetic_photo(folder / f"p{width}.jpg", width, height)
        data_np = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        pil = lambda: np.asarray(Image.open(path).convert("RGB"))  # noqa: E731
        load = lambda: imageio.load_rgb(path)  # noqa: E731

        def gpu() -> torch.Tensor:
            data = torch.from_numpy(data_np.copy())
            return decode_jpeg(data, device="cuda")

        gpu()
        a, g = pil(), gpu().permute(1, 2, 0).cpu().numpy()
        diff = np.abs(a.astype(int) - g.astype(int))
        print(
            f"jpeg  {width}x{height} Pillow decode {wall_ms(pil):6.2f} ms  load_rgb {wall_ms(load):6.2f} ms  "
            f"nvJPEG {wall_ms(gpu, runs=15):6.2f} ms  |diff| mean {diff.mean():.3f} max {diff.max()}"
        )
        with Image.open(path) as im:
            t = time.perf_counter()
            im.draft("RGB", (im.width // 2, im.height // 2))
            im.load()
            print(f"jpeg  {width}x{height} Pillow draft to half size {1e3 * (time.perf_counter() - t):6.2f} ms")


def probe_disk() -> None:
    payload = np.random.default_rng(0).integers(0, 255, PLY_BYTES, dtype=np.uint8)
    view = memoryview(payload)
    for cmd in (
        "df -T /tmp . /dev/shm ${OUT:-/tmp}",
        "cat /proc/sys/vm/dirty_ratio /proc/sys/vm/dirty_background_ratio "
        "/proc/sys/vm/dirty_bytes /sys/fs/cgroup/memory.max 2>/dev/null",
    ):
        print(subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout)

    def single(path: str) -> None:
        with open(path, "wb") as f:
            f.write(view)

    def parallel(path: str, workers: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, len(view))
            step = -(-len(view) // workers)
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda i: os.pwrite(fd, view[i : i + step], i), range(0, len(view), step)))
        finally:
            os.close(fd)

    folders = ["/tmp", os.getcwd(), "/dev/shm", os.environ.get("OUT", "/tmp")]
    for folder in folders:
        for name, fn in [
            ("write", single),
            ("pwrite x4", lambda p: parallel(p, 4)),
            ("pwrite x8", lambda p: parallel(p, 8)),
            ("pwrite x16", lambda p: parallel(p, 16)),
        ]:
            times = []
            for i in range(6):
                path = os.path.join(folder, f"probe-{i}.bin")
                t = time.perf_counter()
                fn(path)
                times.append(1e3 * (time.perf_counter() - t))
            for i in range(6):
                os.unlink(os.path.join(folder, f"probe-{i}.bin"))
            print(
                f"disk  {folder:28s} {name:10s} median {statistics.median(times):6.1f} ms  all "
                + " ".join(f"{t:.0f}" for t in times)
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="gelu,conv,unproject,jpeg,disk")
    args = parser.parse_args()
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    for name in args.only.split(","):
        try:
            globals()[f"probe_{name}"]()
        except Exception as exc:
            import traceback

            traceback.print_exc()
            print(f"{name} failed: {exc}")
        print(flush=True)


if __name__ == "__main__":
    main()
