"""Process faults of the sidecar, seen through the add-on's client (tests/fake_sidecar.py): killed, crashed, hung,
never ready, answering under another id, or sending malformed events. Every job ends with a typed error naming the
step and the log file, the reader thread survives, and the next job works."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sharp_blender import client as sc
from sharp_blender.io import ply, protocol
from tests.faults.helpers import leftovers, make_photo

Factory = Callable[..., Any]
WAIT = 30.0


def _next_job_works(client: sc.SidecarClient, photo: Path, out: Path) -> None:
    client.shutdown()  # a no-op when the fault already stopped it
    client.command = client.command[:2]  # the same client, now on a healthy fake sidecar (no fault flags)
    result = client.predict(photo, out).wait(WAIT)
    assert ply.read_gaussians(result["ply"]).count == result["num_gaussians"]


def _reader_alive(client: sc.SidecarClient) -> bool:
    return any(t.name == "sharp-stdout" and t.is_alive() for t in client._threads)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_sidecar_killed_mid_job_fails_the_job_and_restarts(
    fake_client: Factory, photo: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    client = fake_client("--delay", "1.0")
    job = client.predict(photo, tmp_path / "out" / "a.ply")
    while job.progress is None:
        time.sleep(0.02)
    os.kill(client.pid, sig)
    with pytest.raises(sc.SidecarError) as info:
        job.wait(WAIT)
    assert info.value.kind == protocol.SIDECAR_DIED and "restarts on the next request" in str(info.value)
    assert str(client.log_path) in str(info.value)
    assert not (tmp_path / "out" / "a.ply").exists()
    _next_job_works(client, photo, tmp_path / "out" / "b.ply")


def test_crash_quotes_the_sidecar_log_and_keeps_it_on_disk(fake_client: Factory, photo: Path, tmp_path: Path) -> None:
    client = fake_client("--crash")
    with pytest.raises(sc.SidecarError) as info:
        client.predict(photo, tmp_path / "a.ply").wait(WAIT)
    assert info.value.kind == protocol.SIDECAR_DIED and "exit code 3" in str(info.value)
    assert "crashing on purpose" in str(info.value)  # the tail of its stderr
    assert "crashing on purpose" in client.log_path.read_text()
    _next_job_works(client, photo, tmp_path / "b.ply")


def test_hang_ends_in_a_timeout_naming_the_stage_and_the_log(fake_client: Factory, photo: Path, tmp_path: Path) -> None:
    client = fake_client("--hang", idle_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(sc.SidecarError) as info:
        client.predict(photo, tmp_path / "a.ply").wait(WAIT)
    assert time.monotonic() - started < 10
    text = str(info.value)
    assert info.value.kind == sc.TIMEOUT and "stalled" in text and "predict r1" in text
    assert "waiting for the first progress event" in text and str(client.log_path) in text
    deadline = time.monotonic() + 10
    while client.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.running  # stopped; the next request starts a fresh one
    _next_job_works(client, photo, tmp_path / "b.ply")


def test_stall_after_progress_names_the_last_stage(fake_client: Factory, photo: Path, tmp_path: Path) -> None:
    client = fake_client("--delay", "5", idle_timeout_s=1.0)
    with pytest.raises(sc.SidecarError, match="stage load") as info:
        client.predict(photo, tmp_path / "a.ply").wait(WAIT)
    assert info.value.kind == sc.TIMEOUT


def test_answer_under_another_id_ends_in_a_timeout(fake_client: Factory, photo: Path, tmp_path: Path) -> None:
    client = fake_client("--wrong-id", idle_timeout_s=1.0)
    with pytest.raises(sc.SidecarError) as info:
        client.predict(photo, tmp_path / "a.ply").wait(WAIT)
    assert info.value.kind == sc.TIMEOUT and "predict r1" in str(info.value)
    _next_job_works(client, photo, tmp_path / "b.ply")


def test_never_ready_fails_queued_jobs_at_the_start_up_deadline(
    fake_client: Factory, photo: Path, tmp_path: Path
) -> None:
    client = fake_client("--no-ready", "--hang", start_timeout_s=1.0)
    job = client.predict(photo, tmp_path / "a.ply")
    with pytest.raises(sc.SidecarError, match="start-up") as info:
        job.wait(WAIT)
    assert info.value.kind == sc.TIMEOUT and str(client.log_path) in str(info.value)
    with pytest.raises(sc.SidecarError, match="start-up"):
        client.wait_ready(0.5)


def test_exit_at_start_is_reported_with_its_log(fake_client: Factory) -> None:
    client = fake_client("--exit-at-start", "5")
    with pytest.raises(sc.SidecarError) as info:
        client.wait_ready(WAIT)
    assert info.value.kind == protocol.SIDECAR_DIED and "exit code 5" in str(info.value)
    assert "cannot start (on purpose)" in str(info.value)


def test_missing_interpreter_is_unavailable_with_a_remedy(tmp_path: Path) -> None:
    client = sc.SidecarClient([str(tmp_path / "no-python"), "-m", "sharp_sidecar"], log_path=tmp_path / "l.log")
    with pytest.raises(sc.SidecarError) as info:
        client.predict(tmp_path / "a.jpg", tmp_path / "a.ply")
    assert info.value.kind == sc.SIDECAR_UNAVAILABLE and "setup" in str(info.value)


def test_cancel_of_a_sidecar_that_ignores_it_ends_the_job(fake_client: Factory, photo: Path, tmp_path: Path) -> None:
    client = fake_client("--delay", "2", "--ignore-cancel", cancel_grace_s=0.5)
    job = client.predict(photo, tmp_path / "a.ply")
    while job.progress is None:
        time.sleep(0.02)
    client.cancel(job)
    with pytest.raises(sc.SidecarError) as info:
        job.wait(WAIT)
    assert info.value.kind == protocol.CANCELLED
    assert not (tmp_path / "a.ply").exists() and leftovers(tmp_path) == []


BAD_EVENT = ["result-list", "result-string", "nested", "error-list"]


@pytest.mark.parametrize("kind", BAD_EVENT)
def test_malformed_event_fails_its_job_and_the_reader_survives(
    fake_client: Factory, photo: Path, tmp_path: Path, kind: str
) -> None:
    client = fake_client("--malformed", kind, idle_timeout_s=5.0)
    with pytest.raises(sc.SidecarError) as info:
        client.predict(photo, tmp_path / "a.ply").wait(WAIT)
    if kind == "error-list":  # an error event with an odd payload is still the job's error
        assert info.value.kind == protocol.INTERNAL and "[1, 2]" in str(info.value)
    else:
        assert info.value.kind == sc.BAD_EVENT and "malformed" in str(info.value) and "predict r1" in str(info.value)
    assert _reader_alive(client) and client.running
    assert client.status(timeout=WAIT)["version"] == "0.0-fake"  # the same process still answers


@pytest.mark.parametrize("kind", ["error-string", "error-kind-int"])
def test_error_event_with_odd_fields_is_a_typed_error(
    fake_client: Factory, photo: Path, tmp_path: Path, kind: str
) -> None:
    client = fake_client("--malformed", kind)
    with pytest.raises(sc.SidecarError) as info:
        client.predict(photo, tmp_path / "a.ply").wait(WAIT)
    assert info.value.kind == protocol.INTERNAL
    assert ("a bare string" in str(info.value)) == (kind == "error-string")
    assert _reader_alive(client) and client.status(timeout=WAIT)["busy"] is False


@pytest.mark.parametrize("kind", ["not-json", "binary"])
def test_unreadable_line_without_an_id_ends_by_the_deadline(
    fake_client: Factory, photo: Path, tmp_path: Path, kind: str
) -> None:
    client = fake_client("--malformed", kind, idle_timeout_s=1.0)
    with pytest.raises(sc.SidecarError) as info:
        client.predict(photo, tmp_path / "a.ply").wait(WAIT)
    assert info.value.kind in (sc.TIMEOUT, sc.BAD_EVENT)
    _next_job_works(client, photo, tmp_path / "b.ply")


def test_a_broken_callback_does_not_kill_the_reader(fake_client: Factory, photo: Path, tmp_path: Path) -> None:
    client = fake_client()

    def explode(*_: object) -> None:
        raise RuntimeError("callback bug")

    done = threading.Event()
    job = client.predict(photo, tmp_path / "a.ply", on_progress=explode, on_done=lambda j: (done.set(), explode()))
    assert job.wait(WAIT)["ply"] and done.wait(WAIT)
    assert _reader_alive(client)
    _next_job_works(client, photo, tmp_path / "b.ply")


def test_reader_failure_fails_the_job_and_the_client_recovers(
    fake_client: Factory, photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = fake_client("--delay", "0.5")
    job = client.predict(photo, tmp_path / "a.ply")
    while job.progress is None:
        time.sleep(0.02)
    monkeypatch.setattr(protocol, "decode", lambda raw: (_ for _ in ()).throw(MemoryError("decode blew up")))
    with pytest.raises(sc.SidecarError) as info:
        job.wait(WAIT)
    assert info.value.kind == protocol.SIDECAR_DIED and "MemoryError" in str(info.value)
    monkeypatch.undo()
    _next_job_works(client, photo, tmp_path / "b.ply")


def test_many_jobs_after_faults_still_queue_in_order(fake_client: Factory, tmp_path: Path) -> None:
    client = fake_client()
    photos = [make_photo(tmp_path / f"p{i}.png", (16, 12)) for i in range(4)]
    jobs = [client.predict(p, tmp_path / "out" / f"{p.stem}.ply") for p in photos]
    assert [Path(j.wait(WAIT)["ply"]).name for j in jobs] == ["p0.ply", "p1.ply", "p2.ply", "p3.ply"]
