"""The add-on's pre-start on the GPU machine: `sharp serve` driven by the add-on's own client (no Blender).

Times, from the client's first request: the ``load`` op (sidecar start + model + warm-up forward), then the
first ``predict`` after it (what a user's first Generate waits for, before the import), then a second one.
Usage (device machine, repo root): PYTHONPATH=/tmp/sidecar-site:. python3 (sidecar installed there as scripts/gpu_startup.sh does) scripts/gpu_prestart.py WEIGHTS PHOTO OUT_JSON
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from sharp_blender.client import SidecarClient


def main() -> int:
    weights, photo, out = sys.argv[1:4]
    cache = tempfile.mkdtemp(prefix="sharp-prestart-cache-")
    env = {**os.environ, "SHARP_CACHE_DIR": os.environ.get("SHARP_CACHE_DIR", cache)}
    client = SidecarClient([sys.executable, "-m", "sharp_sidecar", "serve"], env=env)
    report: dict[str, object] = {}
    start = time.perf_counter()
    stages: list[tuple[float, str, str]] = []
    load = client.submit(
        "load",
        {"checkpoint": weights, "device": "cuda"},
        on_progress=lambda job, p: stages.append((time.perf_counter() - start, p.stage, p.message)),
    )
    report["load_result"] = load.wait(300)
    report["load_s"] = time.perf_counter() - start
    report["load_stages"] = stages
    folder = Path(tempfile.mkdtemp(prefix="sharp-prestart-out-"))
    for name in ("first", "second", "third"):
        begin = time.perf_counter()
        result = client.predict(photo, folder / f"{name}.ply", device="cuda", checkpoint=weights).wait(120)
        report[f"{name}_predict_s"] = time.perf_counter() - begin
        report[f"{name}_result"] = {k: result.get(k) for k in ("precision", "timings", "notes")}
        (folder / f"{name}.ply").unlink()
    report["status"] = client.status()
    client.shutdown()
    Path(out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k.endswith("_s")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
