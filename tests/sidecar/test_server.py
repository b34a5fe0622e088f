"""`sharp serve`: the real process over pipes with a tiny checkpoint, plus the request loop in-process."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from sharp_sidecar.io import ply, protocol
from sharp_sidecar.model import get_config
from sharp_sidecar.serve import jobs, server

TINY_N = get_config("tiny").num_gaussians
TIMEOUT = 120.0


class Sidecar:
    """``python -m sharp_sidecar serve`` as the add-on runs it, read line by line on a thread."""

    def __init__(self, env: dict[str, str]) -> None:
        full_env = {k: v for k, v in os.environ.items() if k != "SHARP_CHECKPOINT"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sharp_sidecar", "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**full_env, **env},
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.raw_lines: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.stderr: list[bytes] = []
        threading.Thread(target=lambda: self.stderr.extend(iter(self.proc.stderr.readline, b"")), daemon=True).start()  # type: ignore[union-attr]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.raw_lines.append(raw)
            self.events.put(json.loads(raw))  # every stdout line must be protocol JSON
        self.events.put(None)

    def send(self, message: dict[str, Any] | str) -> None:
        assert self.proc.stdin is not None
        line = message if isinstance(message, str) else protocol.encode(message)
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()

    def next(self) -> dict[str, Any]:
        event = self.events.get(timeout=TIMEOUT)
        assert event is not None, b"".join(self.stderr[-30:]).decode()
        return event

    def until_final(self, request_id: str | None, seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Events up to and including the result/error of ``request_id`` (others are kept in ``seen``)."""
        while True:
            event = self.next()
            if seen is not None:
                seen.append(event)
            if event["id"] == request_id and event["type"] in (protocol.RESULT, protocol.ERROR):
                return event

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    process = Sidecar({"TORCH_HOME": str(tmp_path / "torch-home")})
    yield process
    process.close()


def test_predict_status_errors_and_shutdown(
    sidecar: Sidecar, tiny_checkpoint: Path, reference_images: dict[str, Path], tmp_path: Path
) -> None:
    ready = sidecar.next()
    assert ready["type"] == protocol.READY and ready["id"] is None
    assert ready["result"]["model_loaded"] is False and ready["result"]["torch"] == torch.__version__

    sidecar.send(protocol.request("s1", protocol.STATUS))
    assert sidecar.until_final("s1")["result"]["busy"] is False

    out = tmp_path / "out" / "photo.ply"
    params = {"image": str(reference_images["photo_exif"]), "output": str(out), "checkpoint": str(tiny_checkpoint)}
    sidecar.send(protocol.request("p1", protocol.PREDICT, device="cpu", **params))
    events: list[dict[str, Any]] = []
    final = sidecar.until_final("p1", events)
    assert final["type"] == protocol.RESULT, final
    stages = [e["stage"] for e in events if e["type"] == protocol.PROGRESS]
    for stage in ("checkpoint", "load_model", "read_image", "encoder", "decoders", "unprojection", "ply"):
        assert stage in stages
    fractions = [e["fraction"] for e in events if e["type"] == protocol.PROGRESS and e["fraction"] is not None]
    assert fractions == sorted(fractions) and all(0 <= f <= 1 for f in fractions)
    result = final["result"]
    assert result["ply"] == str(out) and result["num_gaussians"] == TINY_N and result["image_size"] == [600, 400]
    assert "load_model" in result["timings"] and result["device"] == "cpu"
    splats = ply.read_gaussians(out)
    assert splats.count == TINY_N and splats.camera is not None
    assert splats.camera.K[0, 0] == pytest.approx(result["f_px"], rel=1e-6)

    # The model stays loaded: the second request does not load it again.
    sidecar.send(protocol.request("p2", protocol.PREDICT, **params, plain_ply=True, focal_mm=50))
    second = sidecar.until_final("p2")["result"]
    assert "load_model" not in second["timings"] and second["focal_source"] == "focal_mm"
    assert list(ply.read_ply(out).elements) == ["vertex"]
    sidecar.send(protocol.request("s2", protocol.STATUS))
    status = sidecar.until_final("s2")["result"]
    assert status["model_loaded"] is True and status["checkpoint"] == str(tiny_checkpoint)

    # A bad image is an error of kind bad_image, and the server keeps serving.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    sidecar.send(protocol.request("p3", protocol.PREDICT, **{**params, "image": str(broken)}))
    error = sidecar.until_final("p3")
    assert error["type"] == protocol.ERROR and error["error"]["kind"] == protocol.BAD_IMAGE
    assert "broken.jpg" in error["error"]["message"]

    # Malformed requests: bad_request, with the id when there is one.
    sidecar.send("this is not json\n")
    assert sidecar.until_final(None)["error"]["kind"] == protocol.BAD_REQUEST
    sidecar.send({"id": "u1", "op": "teleport", "params": {}})
    assert sidecar.until_final("u1")["error"]["kind"] == protocol.BAD_REQUEST
    sidecar.send(protocol.request("m1", protocol.PREDICT, output=str(out)))
    missing = sidecar.until_final("m1")["error"]
    assert missing["kind"] == protocol.BAD_REQUEST and "image" in missing["message"]
    sidecar.send(protocol.request("f1", protocol.PREDICT, **params, focal_mm=-3))
    assert sidecar.until_final("f1")["error"]["kind"] == protocol.BAD_REQUEST

    # keep_model false unloads after the job.
    sidecar.send(protocol.request("p4", protocol.PREDICT, **params, keep_model=False))
    assert sidecar.until_final("p4")["type"] == protocol.RESULT
    sidecar.send(protocol.request("s3", protocol.STATUS))
    assert sidecar.until_final("s3")["result"]["model_loaded"] is False

    sidecar.send(protocol.request("x", protocol.SHUTDOWN))
    assert sidecar.until_final("x")["result"] == {}
    assert sidecar.proc.wait(30) == 0
    assert all(raw.endswith(b"\n") for raw in sidecar.raw_lines)


def test_cancel_running_and_queued_jobs(
    stalling_url: tuple[str, threading.Event], reference_images: dict[str, Path], tmp_path: Path
) -> None:
    url, release = stalling_url
    home = tmp_path / "torch-home"
    sidecar = Sidecar({"TORCH_HOME": str(home), "SHARP_CHECKPOINT_URL": url})
    try:
        assert sidecar.next()["type"] == protocol.READY
        params = {"image": str(reference_images["photo_exif"]), "output": str(tmp_path / "a.ply"), "device": "cpu"}
        sidecar.send(protocol.request("a", protocol.PREDICT, **params))
        while (event := sidecar.next())["type"] != protocol.PROGRESS or event["stage"] != "download":
            pass  # job "a" is now inside the checkpoint download, stalled by the server
        sidecar.send(protocol.request("b", protocol.PREDICT, **params))
        sidecar.send(protocol.request("cb", protocol.CANCEL, target="b"))
        seen: list[dict[str, Any]] = []
        assert sidecar.until_final("cb", seen)["result"] == {"cancelled": True}
        b_final = [e for e in seen if e["id"] == "b"] or [sidecar.until_final("b")]
        assert b_final[-1]["error"]["kind"] == protocol.CANCELLED

        sidecar.send(protocol.request("st", protocol.STATUS))  # answered while the job runs
        assert sidecar.until_final("st")["result"]["busy"] is True
        sidecar.send(protocol.request("ca", protocol.CANCEL, target="a"))
        assert sidecar.until_final("ca")["result"] == {"cancelled": True}
        release.set()
        a_final = sidecar.until_final("a")
        assert a_final["error"]["kind"] == protocol.CANCELLED
        assert not (home / "hub" / "checkpoints" / "sharp_2572gikvuh.pt").exists()
        assert not (tmp_path / "a.ply").exists()

        sidecar.send(protocol.request("cz", protocol.CANCEL, target="a"))  # already over
        assert sidecar.until_final("cz")["result"] == {"cancelled": False}
        assert sidecar.proc.stdin is not None
        sidecar.proc.stdin.close()  # EOF: the sidecar exits by itself
        assert sidecar.proc.wait(30) == 0
    finally:
        sidecar.close()


def test_stray_output_goes_to_stderr() -> None:
    code = (
        "import os, sys\n"
        "from sharp_sidecar.serve.server import _protocol_stdout\n"
        "out = _protocol_stdout()\n"
        "print('stray print')\n"
        "os.write(1, b'stray C-level write\\n')\n"
        'out.write(\'{"type":"ready"}\\n\'); out.flush()\n'
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout == '{"type":"ready"}\n'
    assert "stray print" in done.stderr and "stray C-level write" in done.stderr


class _Lines:
    """A text stream that hands each written protocol line to a queue."""

    def __init__(self) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.events.put(json.loads(line))
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, _Lines, threading.Event]]:
    """A Server on a pipe with two extra ops: ``slow`` (runs until cancelled) and ``boom`` (a bug)."""
    gate = threading.Event()

    def slow(ctx: jobs.JobContext) -> dict[str, Any]:
        ctx.progress("waiting", 0.0)
        while not gate.wait(0.01):
            ctx.check_cancelled("next")
        return {"ok": True}

    def boom(ctx: jobs.JobContext) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setitem(jobs.JOB_OPS, protocol.PREDICT, slow)
    monkeypatch.setitem(jobs.JOB_OPS, protocol.RENDER, boom)
    read_fd, write_fd = os.pipe()
    lines = _Lines()
    srv = server.Server(os.fdopen(read_fd, "rb"), lines)  # type: ignore[arg-type]
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(srv.serve()), daemon=True)
    thread.start()
    writer = os.fdopen(write_fd, "wb", buffering=0)

    def send(message: dict[str, Any]) -> None:
        writer.write(protocol.encode(message).encode())

    srv.test_send = send  # type: ignore[attr-defined]
    try:
        yield srv, lines, gate
    finally:
        gate.set()
        writer.close()
        thread.join(30)
    assert result == [0]


def _final(lines: _Lines, request_id: str) -> dict[str, Any]:
    while True:
        event = lines.events.get(timeout=30)
        if event["id"] == request_id and event["type"] in (protocol.RESULT, protocol.ERROR):
            return event


def test_internal_errors_carry_a_traceback(in_process: tuple[Any, _Lines, threading.Event]) -> None:
    srv, lines, _ = in_process
    assert lines.events.get(timeout=30)["type"] == protocol.READY
    srv.test_send(protocol.request("r", protocol.RENDER))
    error = _final(lines, "r")["error"]
    assert error["kind"] == protocol.INTERNAL and "a bug" in error["message"]
    assert "RuntimeError" in error["traceback"] and "boom" in error["traceback"]


def test_jobs_run_in_order_and_end_once(in_process: tuple[Any, _Lines, threading.Event]) -> None:
    srv, lines, gate = in_process
    assert lines.events.get(timeout=30)["type"] == protocol.READY
    srv.test_send(protocol.request("j1", protocol.PREDICT))
    srv.test_send(protocol.request("j2", protocol.PREDICT))
    first = lines.events.get(timeout=30)
    assert (first["id"], first["stage"]) == ("j1", "waiting")
    srv.test_send(protocol.request("j1", protocol.PREDICT))  # id still in use
    assert _final(lines, "j1")["error"]["kind"] == protocol.BAD_REQUEST
    srv.test_send(protocol.request("c1", protocol.CANCEL, target="j1"))
    events: list[dict[str, Any]] = []
    keys: list[tuple[str, str]] = []
    while not {("c1", protocol.RESULT), ("j1", protocol.ERROR), ("j2", protocol.PROGRESS)} <= set(keys):
        events.append(lines.events.get(timeout=30))
        keys.append((events[-1]["id"], events[-1]["type"]))
    assert events[keys.index(("c1", protocol.RESULT))]["result"] == {"cancelled": True}
    assert events[keys.index(("j1", protocol.ERROR))]["error"]["kind"] == protocol.CANCELLED
    # j2 starts only after j1 has ended, then finishes normally.
    assert keys.index(("j1", protocol.ERROR)) < keys.index(("j2", protocol.PROGRESS))
    gate.set()
    assert _final(lines, "j2")["result"] == {"ok": True}
    time.sleep(0.1)
    assert lines.events.empty()  # exactly one final event each, nothing after


def test_shutdown_cancels_the_running_job_first(in_process: tuple[Any, _Lines, threading.Event]) -> None:
    srv, lines, _ = in_process
    assert lines.events.get(timeout=30)["type"] == protocol.READY
    srv.test_send(protocol.request("j", protocol.PREDICT))
    srv.test_send(protocol.request("q", protocol.PREDICT))
    assert lines.events.get(timeout=30)["id"] == "j"  # j is running, q waits
    srv.test_send(protocol.request("bye", protocol.SHUTDOWN))
    finals: dict[str, dict[str, Any]] = {}
    while "bye" not in finals:
        event = lines.events.get(timeout=30)
        if event["type"] in (protocol.RESULT, protocol.ERROR):
            assert event["id"] not in finals  # one final event per request
            finals[event["id"]] = event
    assert finals["j"]["error"]["kind"] == finals["q"]["error"]["kind"] == protocol.CANCELLED
    assert finals["bye"]["result"] == {}  # the answer to shutdown comes after every job has ended
