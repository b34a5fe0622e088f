#!/usr/bin/env python3
"""Wall time per stage of the full SHARP model on this machine's CPU: checkpoint load, forward, unprojection, PLY.

Run it alone (a full forward peaks near 9 GB):

    flock ~/.cache/sharp_blender-tests/full-forward.lock python scripts/bench_cpu.py [--weights PT] [--image IMG]

Defaults: the cached reference weights of the test suite and ../shared/reference/images/synth_640x480.png.
Also times the covariance decomposition methods on the image's real metric covariances (N = 1,179,648).
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "sidecar"))


def _default_weights() -> str | None:
    cache = Path(os.environ.get("SHARP_TEST_CACHE") or Path.home() / ".cache" / "sharp_blender-tests")
    found = sorted(glob.glob(str(cache / "refweights-*.pt")))
    return found[-1] if found else None


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> int:
    shared = Path(os.environ.get("SHARP_SHARED") or REPO.parent / "shared")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=_default_weights(), help="state_dict .pt (default: cached refweights)")
    parser.add_argument("--image", default=str(shared / "reference" / "images" / "synth_640x480.png"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-decomposition", action="store_true", help="do not compare decomposition methods")
    args = parser.parse_args()
    if not args.weights:
        print("no weights: pass --weights or run the reference tests once to cache them", file=sys.stderr)
        return 2

    import torch
    from sharp_sidecar.gaussians import covariances, decompose_covariances
    from sharp_sidecar.image.imageio import load_rgb
    from sharp_sidecar.inference.pipeline import predict, save_prediction
    from sharp_sidecar.model import predictor_from_state_dict

    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[tuple[str, float]] = []
    start = time.perf_counter()
    state_dict = torch.load(args.weights, map_location="cpu", weights_only=True)
    rows.append(("checkpoint read (torch.load)", time.perf_counter() - start))
    start = time.perf_counter()
    model = predictor_from_state_dict(state_dict, source=args.weights)
    del state_dict
    rows.append(("model build + strict load", time.perf_counter() - start))
    photo = load_rgb(args.image)
    start, cpu_start = time.perf_counter(), time.process_time()
    load_start = os.getloadavg()[0]
    prediction = predict(model, photo.rgb, photo.f_px)
    total, cpu_total = time.perf_counter() - start, time.process_time() - cpu_start
    t = prediction.timings
    rows += [
        ("resize", t["resize"]),
        ("encoder (SPN, 2 ViT-L)", t["encoder"]),
        ("decoders + heads", t["decoders"]),
        ("composer", t["composer"]),
        ("forward (resize..composer)", t["resize"] + t["encoder"] + t["decoders"] + t["composer"]),
        ("unprojection", t["unprojection"]),
        ("predict total", total),
        ("predict CPU time, all threads (user + sys)", cpu_total),
    ]
    del model
    with tempfile.TemporaryDirectory() as tmp:
        save_prediction(prediction, Path(tmp) / "bench.ply")
        size = (Path(tmp) / "bench.ply").stat().st_size
    rows.append((f"PLY write ({size:,} bytes)", prediction.timings["ply"]))

    if not args.skip_decomposition:
        cov = covariances(prediction.gaussians)[0]
        for method, dtype in (
            ("closed_form", torch.float64),
            ("closed_form", torch.float32),
            ("eigh", torch.float64),
            ("eigh", torch.float32),
        ):
            start = time.perf_counter()
            decompose_covariances(cov, method=method, dtype=dtype)
            rows.append((f"decompose {method} {str(dtype)[6:]} (N={len(cov):,})", time.perf_counter() - start))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, image {Path(args.image).name}")
    print(
        f"peak RSS {_rss_gib():.2f} GiB; 1-min load average {load_start:.2f} before the forward, {os.getloadavg()[0]:.2f} after"
    )
    print("(other processes on a shared machine lengthen the wall times; the CPU time is less affected)")
    print(f"{'stage':50s} {'seconds':>8s}")
    for name, seconds in rows:
        print(f"{name:50s} {seconds:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
