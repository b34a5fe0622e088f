"""A small stand-in for ``sharp serve`` that speaks sharp_blender/io/protocol.py without torch.

``predict`` reads the photo with Pillow and writes a valid SHARP-layout PLY: one opaque splat per 2x2
pixel block, at a known depth (``--depth``, metres) on the block's centre ray, coloured with the block's
mean sRGB colour, with an isotropic scale of sqrt(2)·depth/f (a sphere of that radius covers its
block). The focal length follows SHARP's rule: ``focal_px``, else ``focal_mm`` (35 mm equivalent),
else 30 mm, times the image diagonal / 43.27 mm.

Behaviour for tests (command-line flags):
    --delay S          sleep S seconds in each of the 4 stages (cancel is checked between stages)
    --ignore-cancel    answer ``cancel`` but keep working (the client must terminate the process)
    --crash            exit with code 3 in the middle of ``predict``, after a log line on stderr
    --no-ready         never send the ``ready`` line
    --load-delay S     "loading the model" takes S seconds (once per process, by ``load`` or the first ``predict``)
``status`` reports ``model_loads``: how many times this process loaded its (pretend) model.
    --ready-delay S    wait S seconds before ``ready``
    --exit-at-start N  exit with code N before ``ready``, after a log line on stderr
    --hang             accept ``predict`` and never answer it (nor send progress)
    --wrong-id         answer ``predict`` under another id
    --malformed KIND   answer ``predict`` with a malformed event (see MALFORMED), then serve on
    --nan              write NaN into the first splat's position (a non-finite PLY)
An unreadable image ends the request with an error of kind ``bad_image``.

Usage: python tests/fake_sidecar.py [flags]   (runs from anywhere; finds the repository itself)
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from sharp_blender.io import conventions, ply, protocol  # noqa: E402

VERSION = "0.0-fake"

# --malformed KIND: the raw line sent instead of predict's result ({id} is the request's id).
MALFORMED = {
    "error-string": '{{"type":"error","id":"{id}","error":"a bare string"}}',
    "error-list": '{{"type":"error","id":"{id}","error":[1,2]}}',
    "error-kind-int": '{{"type":"error","id":"{id}","error":{{"kind":7,"message":null}}}}',
    "result-list": '{{"type":"result","id":"{id}","result":[1,2,3]}}',
    "result-string": '{{"type":"result","id":"{id}","result":"done"}}',
    "result-no-ply": '{{"type":"result","id":"{id}","result":{{"ply":42}}}}',
    "nested": '{{"type":"result","id":"{id}","result":' + "[" * 5000 + "]" * 5000 + "}}",
    "not-json": '{{"type":"result","id":"{id}", oops',
    "binary": "\udcff\udcfe{{garbage",
}


def focal_px(width: int, height: int, params: dict[str, Any]) -> float:
    if params.get("focal_px"):
        return float(params["focal_px"])
    f35 = float(params.get("focal_mm") or 30.0)
    return f35 * math.hypot(width, height) / conventions.diagonal_35mm_mm()


def splats_from_image(rgb: np.ndarray, f: float, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> SHARP vertex array with one splat per 2x2 block, and the K used."""
    height, width = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    blocks = rgb[:height, :width].reshape(height // 2, 2, width // 2, 2, 3).astype(np.float64).mean(axis=(1, 3)) / 255
    rows, cols = np.mgrid[0 : height // 2, 0 : width // 2]
    u = (2 * cols + 1).astype(np.float64).ravel()  # the block's centre in pixel coordinates (corner = 0)
    v = (2 * rows + 1).astype(np.float64).ravel()
    cx, cy = rgb.shape[1] / 2, rgb.shape[0] / 2
    n = u.size
    colour = blocks.reshape(n, 3)
    f_dc = conventions.rgb_to_sh_dc(colour)
    log_scale = math.log(math.sqrt(2.0) * depth / f)
    columns = {
        "x": (u - cx) * depth / f,
        "y": (v - cy) * depth / f,
        "z": np.full(n, depth),
        "f_dc_0": f_dc[:, 0],
        "f_dc_1": f_dc[:, 1],
        "f_dc_2": f_dc[:, 2],
        "opacity": np.full(n, 12.0),
        "scale_0": np.full(n, log_scale),
        "scale_1": np.full(n, log_scale),
        "scale_2": np.full(n, log_scale),
        "rot_0": np.ones(n),
        "rot_1": np.zeros(n),
        "rot_2": np.zeros(n),
        "rot_3": np.zeros(n),
    }
    vertex = ply.structured({k: np.asarray(v, dtype=np.float32) for k, v in columns.items()})
    K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])
    return vertex, K


class FakeServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out_lock = threading.Lock()
        self.cancelled: set[str] = set()
        self.jobs: list[tuple[str, str, dict[str, Any]]] = []
        self.jobs_ready = threading.Condition()
        self.busy = False
        self.model_loads = 0

    def send(self, message: dict[str, Any]) -> None:
        with self.out_lock:
            sys.stdout.write(protocol.encode(message))
            sys.stdout.flush()

    def status(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "torch": None,
            "device": "cpu",
            "model_loaded": self.model_loads > 0,
            "model_loads": self.model_loads,
            "busy": self.busy,
        }

    def ensure_model(self, request_id: str) -> bool:
        """Pretend to load the model once per process; True if this call loaded it."""
        if self.model_loads:
            return False
        if self.args.load_delay > 0:  # without the flag, predict's stages stay what the client tests expect
            self.send(protocol.progress(request_id, "load_model", None, "loading the model (fake)"))
            time.sleep(self.args.load_delay)
        self.model_loads += 1
        return True

    def load(self, request_id: str, params: dict[str, Any]) -> dict[str, Any]:
        fresh = self.ensure_model(request_id)
        return {"device": "cpu", "precision": "fp32", "load_s": self.args.load_delay, "loaded": fresh, "compile": None}

    def stage(self, request_id: str, name: str, fraction: float) -> None:
        if request_id in self.cancelled and not self.args.ignore_cancel:
            raise InterruptedError
        self.send(protocol.progress(request_id, name, fraction, f"{name} (fake)"))
        time.sleep(self.args.delay)

    def predict(self, request_id: str, params: dict[str, Any]) -> dict[str, Any]:
        from PIL import Image

        if self.args.hang:
            time.sleep(3600)
        self.stage(request_id, "load", 0.0)
        fresh = self.ensure_model(request_id)
        try:
            with Image.open(params["image"]) as image:
                rgb = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, KeyError) as exc:
            raise LookupError(
                f"cannot read the image '{params.get('image')}': {exc}"
            ) from exc  # raw, as the real sidecar
        height, width = rgb.shape[:2]
        f = focal_px(width, height, params)
        self.stage(request_id, "model", 0.25)
        if self.args.crash:
            print("fake sidecar: crashing on purpose", file=sys.stderr, flush=True)
            sys.stderr.flush()
            import os

            os._exit(3)
        vertex, _K = splats_from_image(rgb, f, self.args.depth)
        if self.args.nan:
            vertex["x"][0] = np.nan
        self.stage(request_id, "gaussians", 0.5)
        extras = ply.sharp_metadata(f, (width, height), len(vertex), [0.1, 1.0])
        ply.write_ply(params["output"], vertex, extras)
        self.stage(request_id, "write", 0.9)
        return {
            "ply": str(params["output"]),
            "image_size": [width, height],
            "f_px": f,
            "num_gaussians": len(vertex),
            "timings": {},
            "model_fresh": fresh,
        }

    def worker(self) -> None:
        while True:
            with self.jobs_ready:
                while not self.jobs:
                    self.jobs_ready.wait()
                request_id, op, params = self.jobs.pop(0)
            self.busy = True
            answer: dict[str, Any] | None = None
            try:
                if not self.args.malformed:
                    run = self.load if op == protocol.LOAD else self.predict
                    result = run(request_id, params)
                    answer_id = request_id + "-other" if self.args.wrong_id else request_id
                    answer = protocol.result(answer_id, result)
            except InterruptedError:
                answer = protocol.error(request_id, protocol.CANCELLED, "predict was cancelled")
            except LookupError as exc:
                answer = protocol.error(request_id, protocol.BAD_IMAGE, str(exc))
            finally:
                # Idle before the answer goes out, as the real server: a status the client sends on reading the
                # answer must find the job over.
                self.busy = False
            if answer is not None:
                self.send(answer)
            elif self.args.malformed:
                with self.out_lock:
                    line = MALFORMED[self.args.malformed].format(id=request_id)
                    sys.stdout.buffer.write(line.encode("utf-8", "surrogateescape") + b"\n")
                    sys.stdout.flush()

    def serve(self) -> int:
        threading.Thread(target=self.worker, daemon=True).start()
        print(f"fake sidecar {VERSION} ready", file=sys.stderr, flush=True)
        if self.args.exit_at_start is not None:
            print("fake sidecar: cannot start (on purpose)", file=sys.stderr, flush=True)
            return int(self.args.exit_at_start)
        time.sleep(self.args.ready_delay)
        if not self.args.no_ready:
            self.send(protocol.ready(self.status()))
        for line in sys.stdin:
            try:
                request_id, op, params = protocol.parse_request(protocol.decode(line))
            except protocol.ProtocolError as exc:
                self.send(protocol.error(None, protocol.BAD_REQUEST, str(exc)))
                continue
            if op == protocol.STATUS:
                self.send(protocol.result(request_id, self.status()))
            elif op == protocol.CANCEL:
                self.cancelled.add(str(params.get("target")))
                self.send(protocol.result(request_id, {"cancelled": True}))
            elif op == protocol.SHUTDOWN:
                self.send(protocol.result(request_id, {}))
                return 0
            elif op in (protocol.PREDICT, protocol.LOAD):
                with self.jobs_ready:
                    self.jobs.append((request_id, op, params))
                    self.jobs_ready.notify()
            else:
                self.send(protocol.error(request_id, protocol.BAD_REQUEST, f"the fake sidecar has no {op!r}"))
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="fake SHARP sidecar for tests")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--depth", type=float, default=2.0)
    parser.add_argument("--ignore-cancel", action="store_true")
    parser.add_argument("--crash", action="store_true")
    parser.add_argument("--no-ready", action="store_true")
    parser.add_argument("--load-delay", type=float, default=0.0)
    parser.add_argument("--ready-delay", type=float, default=0.0)
    parser.add_argument("--exit-at-start", type=int, default=None)
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--wrong-id", action="store_true")
    parser.add_argument("--malformed", choices=sorted(MALFORMED), default=None)
    parser.add_argument("--nan", action="store_true")
    parser.add_argument("serve", nargs="?")
    return FakeServer(parser.parse_args()).serve()


if __name__ == "__main__":
    raise SystemExit(main())
