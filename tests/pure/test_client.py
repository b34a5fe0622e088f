"""sharp_blender.client against the fake sidecar (tests/fake_sidecar.py) in a real subprocess."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sharp_blender import client as sc
from sharp_blender.io import ply, protocol

FAKE = Path(__file__).resolve().parents[1] / "fake_sidecar.py"


def fake(*flags: str, **kwargs: float) -> sc.SidecarClient:
    return sc.SidecarClient([sys.executable, str(FAKE), *flags], **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
    return path


def test_bpy_is_not_needed() -> None:
    source = Path(sc.__file__).read_text()
    assert "import bpy" not in source


def test_starts_on_first_use_and_predicts_with_progress(photo: Path, tmp_path: Path) -> None:
    client = fake()
    assert not client.running
    stages: list[str] = []
    done = threading.Event()
    try:
        job = client.predict(
            photo, tmp_path / "out.ply", on_progress=lambda j, p: stages.append(p.stage), on_done=lambda j: done.set()
        )
        assert client.running
        result = job.wait(30)
        assert done.is_set()
        assert stages == ["load", "model", "gaussians", "write"]
        assert result["num_gaussians"] == 6 * 8 and result["image_size"] == [16, 12]
        data = ply.read_gaussians(result["ply"])
        assert data.count == 48 and data.camera is not None
        assert client.ready_info is not None and client.ready_info["version"] == "0.0-fake"
    finally:
        client.shutdown()
    assert not client.running


def test_status_answers_while_a_job_runs(photo: Path, tmp_path: Path) -> None:
    client = fake("--delay", "0.5")
    try:
        job = client.predict(photo, tmp_path / "out.ply")
        client.wait_ready(30)
        while job.progress is None:  # the job is running now (each stage sleeps 0.5 s)
            time.sleep(0.01)
        status = client.status(timeout=10)
        assert status["busy"] and not job.done  # answered during the job, not after it
        assert status["device"] == "cpu"
        job.wait(30)
    finally:
        client.shutdown()


def test_bad_image_is_an_error_with_its_kind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    client = fake()
    try:
        job = client.predict(bad, tmp_path / "out.ply")
        with pytest.raises(sc.SidecarError) as info:
            job.wait(30)
        assert info.value.kind == protocol.BAD_IMAGE and "bad.jpg" in str(info.value)
        assert not (tmp_path / "out.ply").exists()
        assert client.running  # a failed request leaves the process alive
    finally:
        client.shutdown()


def test_crash_fails_the_job_with_the_log_and_restarts(photo: Path, tmp_path: Path) -> None:
    client = fake("--crash")
    try:
        job = client.predict(photo, tmp_path / "out.ply")
        with pytest.raises(sc.SidecarError) as info:
            job.wait(30)
        assert info.value.kind == protocol.SIDECAR_DIED
        assert "exit code 3" in str(info.value) and "crashing on purpose" in str(info.value)
        first_pid = client.pid
        # The next request starts a fresh process.
        client.command = [sys.executable, str(FAKE)]
        assert client.predict(photo, tmp_path / "out.ply").wait(30)["num_gaussians"] == 48
        assert client.pid != first_pid
    finally:
        client.shutdown()


def test_cancel_is_a_message_first(photo: Path, tmp_path: Path) -> None:
    client = fake("--delay", "0.4")
    try:
        job = client.predict(photo, tmp_path / "out.ply")
        while job.progress is None:
            time.sleep(0.01)
        pid = client.pid
        client.cancel(job)
        with pytest.raises(sc.SidecarError) as info:
            job.wait(10)
        assert info.value.kind == protocol.CANCELLED
        assert client.running and client.pid == pid  # the process survives a cooperative cancel
        assert not (tmp_path / "out.ply").exists()
    finally:
        client.shutdown()


def test_cancel_terminates_a_sidecar_that_ignores_it(photo: Path, tmp_path: Path) -> None:
    client = fake("--delay", "2", "--ignore-cancel", cancel_grace_s=0.5)
    try:
        job = client.predict(photo, tmp_path / "out.ply")
        while job.progress is None:
            time.sleep(0.01)
        t0 = time.monotonic()
        client.cancel(job)
        with pytest.raises(sc.SidecarError) as info:
            job.wait(10)
        assert info.value.kind == protocol.CANCELLED
        assert time.monotonic() - t0 < 5
        assert not client.running
    finally:
        client.shutdown()


def test_missing_python_is_a_clear_error(tmp_path: Path) -> None:
    client = sc.SidecarClient(sc.sidecar_command(tmp_path / "no-such-python"))
    with pytest.raises(sc.SidecarError) as info:
        client.submit(protocol.STATUS)
    assert info.value.kind == sc.SIDECAR_UNAVAILABLE
    assert "no-such-python" in str(info.value) and "preferences" in str(info.value)


def test_startup_failure_is_reported_by_wait_ready(tmp_path: Path) -> None:
    client = sc.SidecarClient([sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(5)"])
    with pytest.raises(sc.SidecarError) as info:
        client.wait_ready(10)
    assert info.value.kind == protocol.SIDECAR_DIED and "boom" in str(info.value)


def test_default_python_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if sys.platform in ("win32", "darwin"):
        pytest.skip("XDG layout is the Linux one")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert sc.default_sidecar_python() == tmp_path / "sharp_blender" / "venv" / "bin" / "python"


def test_blenders_python_variables_do_not_reach_the_sidecar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/blender/python/lib")
    script = (
        "import json, os, sys; "
        "print(json.dumps({'type': 'ready', 'id': None, 'result': {'pp': os.environ.get('PYTHONPATH'), "
        "'extra': os.environ.get('SHARP_CHECKPOINT')}}), flush=True); sys.stdin.read()"
    )
    client = sc.SidecarClient([sys.executable, "-c", script], env={"SHARP_CHECKPOINT": "/x.pt"})
    try:
        assert client.wait_ready(10) == {"pp": None, "extra": "/x.pt"}
    finally:
        client.shutdown(timeout=1)


def test_a_sidecar_without_ready_line_still_answers(photo: Path, tmp_path: Path) -> None:
    client = fake("--no-ready")
    try:
        assert client.status(timeout=10)["version"] == "0.0-fake"
        assert client.wait_ready(1) == {}  # any answer proves the process is up
    finally:
        client.shutdown()
