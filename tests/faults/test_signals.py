"""Signals: SIGKILL during a PLY write leaves a temporary that the next write into that folder sweeps; SIGINT stops
`sharp predict` with exit code 130 and no partial file; a frozen (SIGSTOP) sidecar ends in a timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sharp_sidecar import guards

from sharp_blender import client as sc
from tests.faults.helpers import REPO, digest, leftovers, make_photo, sidecar_env

WRITER = """
import sys, time
sys.path.insert(0, {repo!r})
from sharp_blender.io.atomic import atomic_path
with atomic_path({target!r}) as tmp, open(tmp, "wb") as fh:
    fh.write(b"half of a PLY" * 1000)
    fh.flush()
    print(tmp, flush=True)
    time.sleep(60)
"""


def test_sigkill_during_a_write_leaves_a_temporary_that_the_next_write_sweeps(tmp_path: Path) -> None:
    target = tmp_path / "out" / "scene.ply"
    target.parent.mkdir()
    target.write_bytes(b"previous result")
    before = digest(target)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(repo=str(REPO), target=str(target))], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    partial = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert partial.is_file() and guards.STALE_TEMPORARY.match(partial.name), partial.name  # our pattern, left behind
    assert digest(target) == before  # the old file is whole
    guards.prepare_output(target)  # young: a writer may still be at work, so it stays
    assert partial.exists()
    old = time.time() - guards.STALE_AGE_S - 60
    os.utime(partial, (old, old))
    guards.prepare_output(target)
    assert not partial.exists() and digest(target) == before and leftovers(tmp_path) == []


def test_sigint_stops_sharp_predict_with_130_and_no_partial(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = tmp_path / "photos"
    for i in range(30):
        make_photo(src / f"p{i:02d}.png", (32, 24))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sharp_sidecar",
            "predict",
            "-i",
            str(src),
            "-o",
            str(out),
            "-c",
            str(tiny_checkpoint),
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=sidecar_env(),
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "model: ..." once the model is loaded
    assert b"model:" in first, first
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and b"interrupted" in err and b"Traceback" not in err, err[-2000:]
    assert leftovers(tmp_path) == []
    for written in out.rglob("*.ply"):  # whatever was written before the signal is complete
        assert written.stat().st_size > 1000


def test_frozen_sidecar_ends_in_a_timeout_and_the_next_job_works(
    fake_client: Callable[..., Any], tmp_path: Path
) -> None:
    photo = make_photo(tmp_path / "p.png", (16, 12))
    client = fake_client("--delay", "0.3", idle_timeout_s=1.5)
    client.wait_ready(30)
    job = client.predict(photo, tmp_path / "a.ply")
    os.kill(client.pid, signal.SIGSTOP)
    try:
        error = None
        try:
            job.wait(30)
        except sc.SidecarError as exc:
            error = exc
        assert error is not None and error.kind == sc.TIMEOUT and "stalled" in str(error)
    finally:
        pid = client.pid
        if pid is not None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert client.predict(photo, tmp_path / "b.ply").wait(30)["ply"] == str(tmp_path / "b.ply")


def test_sigkill_while_idle_restarts_on_the_next_request(fake_client: Callable[..., Any], tmp_path: Path) -> None:
    client = fake_client()
    client.wait_ready(30)
    first = client.pid
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while client.running and time.monotonic() < deadline:
        time.sleep(0.05)
    photo = make_photo(tmp_path / "p.png", (16, 12))
    assert client.predict(photo, tmp_path / "a.ply").wait(30)["ply"] and client.pid != first
