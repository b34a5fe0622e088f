#!/usr/bin/env python3
"""FP32 check of the full SHARP model on CUDA: equivalence with the CPU reference and timings.

Meant for the GPU machine, which cannot see ../shared: copy make_weights.py, sharp_state_dict_keys.tsv, the two
images and the two npz files into a git-ignored folder (default .bench/) and run

    PYTHONPATH=/tmp/sidecar-site (after: python3 -m pip install --no-deps --no-build-isolation --target /tmp/sidecar-site ./sidecar) python3 scripts/gpu_fp32_check.py --bench-dir .bench

It regenerates the reference weights with make_weights.py (their checksum is compared with the README's: if the
local torch's randn stream differs, the npz comparison is meaningless and says so), runs both reference images with
TF32 off, compares the recorded Gaussians, and times the forward and photo -> PLY end to end (median of 5 after
warm-up, torch.cuda.synchronize around each). The summary table is printed last.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "sidecar"))

README_SHA256 = "1351dfa180ddf82f0ab496076dd625abe462086f5004143a5725cea4496f017a"
README_SUM = 112922.1776717919
IMAGES = {"synth_640x480": "synth_640x480.png", "photo_exif": "photo_exif.jpg"}


def checksum(state_dict: dict) -> tuple[str, float]:  # type: ignore[type-arg]
    digest = hashlib.sha256()
    total = 0.0
    for key in sorted(state_dict):
        tensor = state_dict[key].contiguous()
        digest.update(key.encode())
        digest.update(tensor.numpy().tobytes())
        total += float(tensor.double().sum())
    return digest.hexdigest(), total


def covariances64(quaternions: np.ndarray, scales: np.ndarray) -> np.ndarray:
    q = quaternions.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    R = np.stack(
        [
            np.stack([w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z], -1),
        ],
        -2,
    )
    return (R * scales.astype(np.float64)[:, None, :] ** 2) @ R.transpose(0, 2, 1)


def median_time(fn, runs: int, sync) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench-dir", type=Path, default=REPO / ".bench")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dry-run", action="store_true", help="tiny random model on the CPU: checks the script only")
    args = parser.parse_args()

    import torch
    from sharp_sidecar.image.imageio import load_rgb
    from sharp_sidecar.inference.pipeline import predict, preprocess, save_prediction
    from sharp_sidecar.inference.precision import DEFAULT, inference_mode
    from sharp_sidecar.model import create_predictor, predictor_from_state_dict

    if args.dry_run:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    sys.path.insert(0, str(args.bench_dir))
    import make_weights  # type: ignore[import-not-found]

    table: list[tuple[str, str]] = [
        ("torch", torch.__version__),
        ("device", torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"),
    ]
    if args.dry_run:
        model = create_predictor("tiny")
        weights_match = False
    else:
        start = time.perf_counter()
        state_dict = make_weights.make_state_dict(args.bench_dir / "sharp_state_dict_keys.tsv")
        sha, total = checksum(state_dict)
        weights_match = sha == README_SHA256
        table.append(("weights generated + checksummed", f"{time.perf_counter() - start:.1f} s"))
        table.append(("weights checksum", f"{'matches README' if weights_match else 'DIFFERS'} (sum {total:.10g})"))
        model = predictor_from_state_dict(state_dict, device=device)
        del state_dict

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for name, filename in IMAGES.items():
        ref = np.load(args.bench_dir / f"{name}.npz")
        photo = load_rgb(args.bench_dir / filename)
        idx = ref["gauss_idx"]
        keep = idx < model.config.num_gaussians  # all of them except in a (tiny) dry run
        idx = idx[keep]
        ref = {k: ref[k][keep] if ref[k].shape[:1] == keep.shape else ref[k] for k in ref.files}
        seen: dict[str, np.ndarray] = {}

        def observe(key: str, t: torch.Tensor, seen: dict[str, np.ndarray] = seen, idx: np.ndarray = idx) -> None:
            if key == "delta":
                seen["delta_at_idx"] = (
                    t.permute(0, 2, 3, 4, 1).reshape(-1, 14)[torch.from_numpy(idx).to(t.device)].cpu().numpy()
                )
            elif key == "disparity":
                seen["disparity_s8"] = t[0, :, ::8, ::8].cpu().numpy()

        prediction = predict(model, photo.rgb, photo.f_px, precision=DEFAULT, observe=observe)
        g = prediction.gaussians
        ours = {
            f: getattr(g, f)[0].cpu().numpy()[idx]
            for f in ("means", "singular_values", "quaternions", "colors", "opacities")
        }
        if weights_match or args.dry_run:  # (a dry run compares too, to exercise the code; values meaningless)
            rel = lambda a, b: float((np.abs(a - b) / np.maximum(np.abs(b), 1e-30)).max())  # noqa: E731
            cov = covariances64(ours["quaternions"], ours["singular_values"])
            ref_cov = ref["metric_covariances"]
            cov_err = np.linalg.norm(cov - ref_cov, axis=(1, 2)) / np.linalg.norm(ref_cov, axis=(1, 2))
            for key in ("delta_at_idx", "disparity_s8") if not args.dry_run else ("delta_at_idx",):
                err = float(np.abs(seen[key] - ref[key]).max() / np.abs(ref[key]).max())
                table.append((f"{name} {key} max|d|/max|ref|", f"{err:.2e}"))
            table.append((f"{name} metric means max rel", f"{rel(ours['means'], ref['metric_means']):.2e}"))
            table.append(
                (f"{name} metric scales max rel", f"{rel(ours['singular_values'], ref['metric_singular_values']):.2e}")
            )
            table.append((f"{name} covariances max / median rel", f"{cov_err.max():.2e} / {np.median(cov_err):.2e}"))
            table.append(
                (
                    f"{name} colours / opacities max abs",
                    f"{np.abs(ours['colors'] - ref['metric_colors']).max():.2e} / {np.abs(ours['opacities'] - ref['metric_opacities']).max():.2e}",
                )
            )
        else:
            table.append((f"{name} npz comparison", "skipped: the generated weights differ from the reference's"))
        table.append((f"{name} stage times (s)", ", ".join(f"{k} {v:.3f}" for k, v in prediction.timings.items())))

    # Timings on the synth image.
    photo_path = args.bench_dir / IMAGES["synth_640x480"]
    photo = load_rgb(photo_path)
    image, factor = preprocess(photo.rgb, photo.f_px, model.config.resolution, device)

    def forward() -> None:
        with inference_mode(DEFAULT, device):
            model(image, factor)

    for _ in range(2):
        forward()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fwd = median_time(forward, args.runs, sync)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    with tempfile.TemporaryDirectory() as tmp:

        def end_to_end() -> None:
            loaded = load_rgb(photo_path)
            save_prediction(predict(model, loaded.rgb, loaded.f_px), Path(tmp) / "out.ply")

        end_to_end()
        e2e = median_time(end_to_end, args.runs, sync)
        stages = predict(model, photo.rgb, photo.f_px).timings

    # For information: PyTorch's own CUDA default lets cuDNN use TF32 (what the reference ran with).
    torch.backends.cudnn.allow_tf32 = True

    def forward_cudnn_tf32() -> None:
        with torch.no_grad():
            model(image, factor)

    forward_cudnn_tf32()
    fwd_tf32 = median_time(forward_cudnn_tf32, args.runs, sync)

    table += [
        (f"forward FP32, TF32 off (median of {args.runs})", f"{fwd:.3f} s"),
        (f"photo -> PLY end to end FP32 (median of {args.runs})", f"{e2e:.3f} s"),
        ("  of which unprojection (one run)", f"{stages['unprojection']:.3f} s"),
        ("peak GPU memory in forward", f"{peak:.2f} GiB"),
        (f"forward, cuDNN TF32 on (PyTorch default; median of {args.runs})", f"{fwd_tf32:.3f} s"),
    ]
    width = max(len(k) for k, _ in table)
    print("\n== SHARP FP32 on CUDA")
    for key, value in table:
        print(f"{key:{width}s}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
