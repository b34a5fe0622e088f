"""`sharp bench --startup`: how long a new process takes to its first PLY, each case in a fresh subprocess.

Cases (``--cases``, in order; they share one temporary cache folder, so their order matters):

- ``cold``: an empty compile cache (a machine that never compiled): the fast policy, background compile.
- ``warm``: the cache that ``cold`` left (a second Blender session on the same machine).
- ``store``: only the compile store's entry kept (Inductor's and Triton's cache folders deleted), to see
  what torch's compile-cache artifacts alone give back.
- ``blocking``: the warm cache, compiling before the first photo (the behaviour before warm_start).
- ``fp32``: the FP32 reference path.

Each child reports, in seconds from just before the parent started it: Python up, ``import torch`` + CUDA
initialised, model ready, first PLY on disk, then runs photos on the eager path until the compiled path is
ready (or ``--max-wait`` s have passed), and times ``--runs`` photos on whatever path it ends on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES = ("cold", "warm", "store", "blocking", "fp32")
ROWS = (
    ("python", "Python started"),
    ("torch", "import torch + CUDA init"),
    ("model_ready", "model ready"),
    ("first_ply", "first PLY on disk"),
    ("compiled_ready", "compiled path ready"),
)


def dispatch(args: argparse.Namespace) -> int:
    """`sharp bench`: the start-up report with ``--startup``, else the per-stage bench (bench.py)."""
    if getattr(args, "startup", False):
        return run(args)
    from .bench import run as run_bench

    return run_bench(args)


def child(spec: dict[str, Any]) -> None:
    """One fresh process's start-up, reported as JSON lines on stdout (see the module docstring)."""
    t0 = float(spec["t0"])

    def emit(event: str, **data: Any) -> None:
        print(json.dumps({"event": event, "t": time.time() - t0, **data}), flush=True)

    emit("python")
    import torch

    torch.cuda.init()
    torch.zeros(1, device="cuda")
    emit("torch")
    from ..inference.predict import load_model, predict_file

    loaded = load_model(spec["checkpoint"], "cuda", precision=spec["precision"], compile=spec["compile"])
    emit("model_ready", precision=loaded.precision.name, timings=loaded.load_timings)
    out = Path(spec["out"])
    first = predict_file(loaded, spec["photo"], out / "first.ply")
    emit("first_ply", precision=first.precision, timings=first.timings)
    meanwhile: list[float] = []
    while loaded.paths is not None and loaded.paths.state == "compiling" and time.time() - t0 < spec["max_wait"]:
        start = time.perf_counter()
        predict_file(loaded, spec["photo"], out / f"eager{len(meanwhile)}.ply")
        meanwhile.append(time.perf_counter() - start)
        (out / f"eager{len(meanwhile) - 1}.ply").unlink()
    if loaded.paths is not None:
        loaded.paths.wait(max(0.0, spec["max_wait"] - (time.time() - t0)))
        emit("compiled_ready", status=loaded.paths.status(), photos=len(meanwhile), photo_s=meanwhile)
    steady: list[float] = []
    precision = ""
    for i in range(int(spec["runs"])):
        start = time.perf_counter()
        result = predict_file(loaded, spec["photo"], out / f"steady{i}.ply")
        steady.append(time.perf_counter() - start)
        (out / f"steady{i}.ply").unlink()
        precision = result.precision
    emit("steady", photo_to_ply_s=steady, precision=precision)


def _spawn(spec: dict[str, Any], env: dict[str, str], timeout: float) -> dict[str, Any]:
    spec = {**spec, "t0": time.time()}
    command = [sys.executable, "-m", "sharp_sidecar.cli.bench_startup", json.dumps(spec)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        stderr, code = "timed out", -1
    events: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            events[event.pop("event")] = event
    events["returncode"] = code
    if code != 0:
        events["stderr"] = stderr[-3000:]
    return events


def _case_env(case: str, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    env["SHARP_CACHE_DIR"] = str(cache)
    env["PYTHONUNBUFFERED"] = "1"
    if case == "store":
        for name in ("inductor", "triton"):
            shutil.rmtree(cache / "compile" / name, ignore_errors=True)
    return env


def _median_ms(values: list[float] | None) -> str:
    return "-" if not values else f"{statistics.median(values) * 1000:.1f}"


def format_table(report: dict[str, Any]) -> str:
    cases = report["cases"]
    names = list(cases)
    lines = [f"{'start-up (s from process start)':<38}" + "".join(f"{n:>14}" for n in names)]

    def row(label: str, values: list[str]) -> None:
        lines.append(f"{label:<38}" + "".join(f"{v:>14}" for v in values))

    for key, label in ROWS:
        row(f"  {label}", [f"{cases[n][key]['t']:.2f}" if key in cases[n] else "-" for n in names])
    row("  first photo's path", [cases[n].get("first_ply", {}).get("precision", "-") for n in names])
    row("  eager photos while compiling", [str(cases[n].get("compiled_ready", {}).get("photos", "-")) for n in names])
    row("  eager photo -> PLY, ms", [_median_ms(cases[n].get("compiled_ready", {}).get("photo_s")) for n in names])
    row("  then photo -> PLY, ms", [_median_ms(cases[n].get("steady", {}).get("photo_to_ply_s")) for n in names])
    row("  then path", [cases[n].get("steady", {}).get("precision", "-") for n in names])
    row("  exit code", [str(cases[n]["returncode"]) for n in names])
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """The start-up report: each case of ``args.cases`` in a fresh subprocess; prints the table last."""
    cases = [c.strip() for c in (args.cases or ",".join(CASES)).split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        print(f"error: unknown start-up case(s) {', '.join(unknown)}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"cases": {}, "max_wait_s": args.max_wait}
    with tempfile.TemporaryDirectory(prefix="sharp-startup-") as tmp:
        workdir = Path(tmp)
        from .bench_reference import reference_state_dict, synthetic_photo

        checkpoint = Path(args.checkpoint).expanduser() if args.checkpoint else None
        if checkpoint is None:
            import torch

            checkpoint = workdir / "refweights.pt"
            torch.save(reference_state_dict(args.preset), checkpoint)
        photo = Path(args.image) if args.image else synthetic_photo(workdir / "photo.jpg", *args.photo_size)
        cache = Path(args.cache_dir) if args.cache_dir else workdir / "cache"
        if args.cache_dir and "cold" in cases:
            shutil.rmtree(cache, ignore_errors=True)  # "cold" means it: nothing compiled before
        for case in cases:
            out = workdir / f"out-{case}"
            out.mkdir()
            spec = {
                "checkpoint": str(checkpoint),
                "photo": str(photo),
                "out": str(out),
                "precision": "fp32" if case == "fp32" else args.fast,
                "compile": "blocking" if case == "blocking" else "background",
                "max_wait": args.max_wait,
                "runs": args.runs,
            }
            print(f"start-up case {case} ...", file=sys.stderr, flush=True)
            report["cases"][case] = events = _spawn(spec, _case_env(case, cache), args.max_wait + 120)
            print(f"  {case}: {json.dumps(events)[:2000]}", file=sys.stderr, flush=True)
            shutil.rmtree(out, ignore_errors=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(format_table(report))
    return 0


if __name__ == "__main__":
    child(json.loads(sys.argv[1]))
