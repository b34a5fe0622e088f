#!/usr/bin/env python3
"""Time the add-on's PLY import (the hot path) on a synthetic SHARP-layout PLY, with bpy as a module.

Generates a PLY of SHARP's size (2 layers x 768 x 768 = 1,179,648 splats, with SHARP's seven
metadata elements), then imports it the way ``bpy.ops.sharp.import_ply`` does (splat object with
all attributes, camera, display modifier) and prints the time of each run and the best.

Usage: python scripts/bench_import.py [--splats N] [--runs 5] [--keep PATH] [--display GAUSSIANS|POINTS] [--stages]
       [--session]
Target: <= 0.3 s for 1,179,648 splats on a 2-core CPU (issue 5; issue 11 for the native point cloud,
the default on Blender >= 5.3: run it with bpy 5.3.0 on Python 3.13).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARP_SPLATS = 2 * 768 * 768


def synthetic_ply(path: Path, count: int, seed: int = 0) -> None:
    """A SHARP-layout PLY with plausible values (depths 0.5-20 m, pancake scales, unit quaternions)."""
    from sharp_blender.io import ply

    rng = np.random.default_rng(seed)
    width, height, f = 1536, 1152, 1300.0
    depth = rng.uniform(0.5, 20.0, count).astype(np.float32)
    u = rng.uniform(0, width, count).astype(np.float32)
    v = rng.uniform(0, height, count).astype(np.float32)
    quats = rng.normal(size=(count, 4)).astype(np.float32)
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    columns = {
        "x": (u - width / 2) * depth / f,
        "y": (v - height / 2) * depth / f,
        "z": depth,
        **{f"f_dc_{i}": rng.normal(0, 1, count).astype(np.float32) for i in range(3)},
        "opacity": rng.normal(2, 2, count).astype(np.float32),
        **{f"scale_{i}": (np.log(depth / f) + rng.normal(0, 0.3, count)).astype(np.float32) for i in range(3)},
        **{f"rot_{i}": quats[:, i] for i in range(4)},
    }
    vertex = ply.structured(columns)
    ply.write_ply(path, vertex, ply.sharp_metadata(f, (width, height), count, [0.05, 2.0]))


# Stages timed with --stages: (label, module, function). The importer looks them up at call time, so
# wrapping the module attribute times every call; what is left of the run is "other" (cloud, object, camera).
STAGES = (
    ("read PLY", "sharp_blender.splat", "read"),
    ("scene centre", "sharp_blender.placement", "scene_centre"),
    ("attribute maths", "sharp_blender.native_attributes", "cloud_attributes"),
    ("attribute maths", "sharp_blender.splat", "derive"),
    ("Blender attributes", "sharp_blender.native_cloud", "set_attributes"),
)


def page_faults() -> int:
    """Minor page faults of this process so far (fresh memory costs ~4 us a 4 KiB page on some VMs); 0 off Unix."""
    try:
        import resource
    except ImportError:
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def time_stages(totals: dict[str, float], faults: dict[str, float]) -> None:
    """Wrap the STAGES functions so that each call adds its wall time to ``totals[label]`` (and its page
    faults to ``faults[label]``)."""

    def timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0, f0 = time.perf_counter(), page_faults()
            try:
                return function(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - t0
                faults[label] = faults.get(label, 0) + page_faults() - f0

        return wrapper

    for label, module_name, name in STAGES:
        module = importlib.import_module(module_name)
        if hasattr(module, name):
            setattr(module, name, timed(label, getattr(module, name)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splats", type=int, default=SHARP_SPLATS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="write the synthetic PLY here (and keep it)")
    parser.add_argument(
        "--display",
        choices=("GAUSSIANS", "POINTS"),
        help="native point cloud or mesh (default: native where supported)",
    )
    parser.add_argument("--stages", action="store_true", help="also print the median time of each stage")
    parser.add_argument(
        "--session",
        action="store_true",
        help="keep each run's objects, as a user keeps their imports: every run then gets fresh memory "
        "(by default the scene is emptied before each run, so a run reuses the memory the last one freed)",
    )
    args = parser.parse_args()

    import bpy

    from sharp_blender import importer

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bench.ply"
        t0 = time.perf_counter()
        synthetic_ply(path, args.splats)
        print(
            f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {args.splats:,} splats) in {time.perf_counter() - t0:.1f} s"
        )
        times, cpu = [], []
        stages: list[dict[str, float]] = []
        stage_faults: list[dict[str, float]] = []
        totals: dict[str, float] = {}
        faults: dict[str, float] = {}
        if args.stages:
            time_stages(totals, faults)
        bpy.ops.wm.read_homefile(use_empty=True)
        for run in range(args.runs):
            if not args.session:
                bpy.ops.wm.read_homefile(use_empty=True)
            totals.clear()
            faults.clear()
            t0, c0, f0 = time.perf_counter(), time.process_time(), page_faults()
            result = importer.import_ply(bpy.context, path, display_mode=args.display)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            stages.append({**totals, "other": times[-1] - sum(totals.values())})
            stage_faults.append({**faults, "other": page_faults() - f0 - sum(faults.values())})
            assert importer.splat_count(result.splat) == args.splats
            # CPU time (all threads) tells a busy machine from a slow import.
            print(f"run {run + 1}: {times[-1]:.3f} s wall, {cpu[-1]:.3f} s CPU")
        # The page cache is warm after the first run, as it is right after the sidecar wrote the file.
        kind = f"{result.splat.type.lower()} ({bpy.app.version_string})"
        print(
            f"import of {args.splats:,} splats as a {kind}: best {min(times):.3f} s, median {float(np.median(times)):.3f} s "
            f"(CPU time best {min(cpu):.3f} s; load average {os.getloadavg()[0]:.2f})"
        )
        if args.stages:
            print("median per stage: " + ", ".join(f"{k} {np.median([s[k] for s in stages]):.3f} s" for k in stages[0]))
            median_faults = ", ".join(f"{k} {np.median([f[k] for f in stage_faults]):.0f}" for k in stage_faults[0])
            print(f"median page faults per stage: {median_faults}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
