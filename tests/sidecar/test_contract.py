"""Contract: the add-on's real client (sharp_blender.client) against the real `sharp serve` (tiny checkpoint)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sharp_sidecar.io import ply
from sharp_sidecar.model import get_config

from sharp_blender.client import Job, Progress, SidecarClient, SidecarError, sidecar_command
from sharp_blender.io import protocol

TINY_N = get_config("tiny").num_gaussians
TIMEOUT = 120.0


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SidecarClient]:
    monkeypatch.delenv("SHARP_CHECKPOINT", raising=False)
    sidecar = SidecarClient(sidecar_command(sys.executable), env={"TORCH_HOME": str(tmp_path / "torch-home")})
    yield sidecar
    sidecar.shutdown()


def test_predict_status_and_errors(
    client: SidecarClient, tiny_checkpoint: Path, reference_images: dict[str, Path], tmp_path: Path
) -> None:
    ready = client.wait_ready(TIMEOUT)
    assert ready["model_loaded"] is False and ready["protocol"] == protocol.PROTOCOL_VERSION
    assert client.status()["busy"] is False

    stages: list[str] = []
    done = threading.Event()

    def on_progress(job: Job, progress: Progress) -> None:
        stages.append(progress.stage)

    out = tmp_path / "out" / "coffee.ply"
    job = client.predict(
        reference_images["photo_exif"],
        out,
        on_progress=on_progress,
        on_done=lambda job: done.set(),
        checkpoint=str(tiny_checkpoint),
        device="cpu",
        focal_mm=None,  # the client drops None options; the sidecar reads the EXIF focal
    )
    result = job.wait(TIMEOUT)
    assert done.wait(5) and job.done and job.error is None
    assert {"read_image", "encoder", "ply"} <= set(stages)
    assert result["ply"] == str(out) and result["num_gaussians"] == TINY_N and result["focal_source"] == "exif_35mm"
    assert ply.read_gaussians(out).count == TINY_N
    assert client.status()["model_loaded"] is True

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(SidecarError) as info:
        client.predict(broken, tmp_path / "b.ply", checkpoint=str(tiny_checkpoint)).wait(TIMEOUT)
    assert info.value.kind == protocol.BAD_IMAGE and "broken.png" in info.value.message

    with pytest.raises(SidecarError) as info:
        client.predict(reference_images["photo_exif"], out, focal_px=-1, checkpoint=str(tiny_checkpoint)).wait(TIMEOUT)
    assert info.value.kind == protocol.BAD_REQUEST

    with pytest.raises(SidecarError) as info:
        client.predict(reference_images["photo_exif"], out, checkpoint=str(tmp_path / "missing.pt")).wait(TIMEOUT)
    assert info.value.kind == protocol.CHECKPOINT and "missing.pt" in info.value.message

    pid = client.pid
    assert client.status()["pid"] == pid  # the same process served everything
    client.shutdown()
    assert not client.running


def test_cancel_and_crash(
    client: SidecarClient,
    stalling_url: tuple[str, threading.Event],
    reference_images: dict[str, Path],
    tmp_path: Path,
) -> None:
    url, release = stalling_url
    client.env["SHARP_CHECKPOINT_URL"] = url
    client.wait_ready(TIMEOUT)
    downloading = threading.Event()

    def on_progress(job: Job, progress: Progress) -> None:
        if progress.stage == "download":
            downloading.set()

    image, out = reference_images["photo_exif"], tmp_path / "x.ply"
    job = client.predict(image, out, on_progress=on_progress, device="cpu")
    assert downloading.wait(TIMEOUT)
    queued = client.predict(image, out, device="cpu")
    client.cancel(queued)
    with pytest.raises(SidecarError) as info:
        queued.wait(TIMEOUT)
    assert info.value.kind == protocol.CANCELLED
    client.cancel(job)
    release.set()  # the download moves on, sees the cancellation and stops
    with pytest.raises(SidecarError) as info:
        job.wait(TIMEOUT)
    assert info.value.kind == protocol.CANCELLED
    assert client.running  # cancelled by the sidecar itself, not by killing it
    assert not out.exists()

    # A crash ends the pending job with sidecar_died; the next request starts a new process.
    release.clear()
    downloading.clear()
    stuck = client.predict(image, out, on_progress=on_progress, device="cpu")
    assert downloading.wait(TIMEOUT)
    old_pid = client.pid
    assert client._proc is not None
    client._proc.kill()
    with pytest.raises(SidecarError) as info:
        stuck.wait(TIMEOUT)
    assert info.value.kind == protocol.SIDECAR_DIED
    assert client.status()["pid"] != old_pid
