"""The argparse half of `sharp bench` (no torch import, so `sharp --help` stays fast); the work is in bench.py."""

from __future__ import annotations

import argparse
from typing import Any

from .common import common_options, lazy


def add_bench(subparsers: Any) -> None:
    """Register ``sharp bench``."""
    p = subparsers.add_parser(
        "bench",
        parents=[common_options()],
        help="time the FP32 and fast paths per stage on a GPU, with the fast path's error and render PSNR",
        description=(
            "Time the FP32 path and the fast path side by side on one photo (per stage, forward, photo -> PLY, "
            "peak GPU memory, load and compile time; medians), compare their Gaussians (relative L2) and their "
            "renders along the default trajectory (PSNR). Prints a table and optionally writes JSON."
        ),
    )
    p.add_argument("-c", "--checkpoint", default=None, help="checkpoint (default: generated reference weights)")
    p.add_argument("-i", "--image", default=None, help="photo to time (default: a synthetic 1536x1024 JPEG)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated policies; fp32 always runs first")
    p.add_argument("--runs", type=int, default=5, help="timed runs per figure (median; default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs after the first call (default 2)")
    p.add_argument("--batch", type=int, default=8, help="photos in the folder-throughput run (default 8; 0: skip)")
    p.add_argument("--frames", type=int, default=60, help="trajectory frames rendered for the PSNR (default 60)")
    p.add_argument("--render-backend", choices=("auto", "gsplat", "torch"), default="auto")
    p.add_argument("--no-render", action="store_true", help="skip the render comparison")
    p.add_argument("--preset", default="default", help=argparse.SUPPRESS)
    p.add_argument("--photo-size", type=int, nargs=2, default=(1536, 1024), metavar=("W", "H"), help=argparse.SUPPRESS)
    p.add_argument("--profile", default=None, help=argparse.SUPPRESS)  # folder for torch.profiler kernel tables
    p.add_argument("--json", default=None, help="write the full report (JSON) here")
    p.add_argument("--smoke", action="store_true", help="tiny preset, one run, on the CPU: checks that it all works")
    p.add_argument(
        "--startup",
        action="store_true",
        help="instead: time fresh processes to 'model ready' and 'first PLY on disk' (cold and warm caches, fp32)",
    )
    p.add_argument("--cases", default=None, help="start-up cases (default cold,warm,store,blocking,fp32)")
    p.add_argument("--fast", default="auto", help="the fast policy of the start-up cases (default auto)")
    p.add_argument("--cache-dir", default=None, help="start-up cases' cache folder, emptied first (default: temporary)")
    p.add_argument("--max-wait", type=float, default=180.0, help="seconds a start-up case waits for the compile")
    p.set_defaults(handler=lazy(".bench_startup:dispatch"))
