"""The sidecar's ``render`` op: in-process through a real JobContext, and through `sharp serve` over pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from sharp_sidecar.errors import BadRequestError, Cancelled
from sharp_sidecar.gaussians import Gaussians
from sharp_sidecar.io import protocol, trajectory
from sharp_sidecar.render import render_op
from sharp_sidecar.render.video import read_video_info
from sharp_sidecar.serve.jobs import Job, JobContext, ModelCache

from tests.pixel_splats import write_pixel_ply


@pytest.fixture(scope="module")
def scene_ply(tmp_path_factory: pytest.TempPathFactory, reference_images) -> Path:  # type: ignore[no-untyped-def]
    image = np.asarray(Image.open(reference_images["photo_exif"]).convert("RGB").resize((90, 60)))
    path = tmp_path_factory.mktemp("op") / "photo.ply"
    write_pixel_ply(path, image, focal=80.0)
    return path


def run_op(params: dict[str, Any], state: dict[str, Any] | None = None, cancel: bool = False):  # type: ignore[no-untyped-def]
    events: list[dict[str, Any]] = []
    job = Job("r1", protocol.RENDER, params)
    if cancel:
        job.cancel.set()
    ctx = JobContext(job, events.append, ModelCache(), state if state is not None else {})
    return render_op.render_op(ctx), events


def test_explicit_cameras(tmp_path: Path, scene_ply: Path) -> None:
    K = [[80.0, 0, 45], [0, 80.0, 30], [0, 0, 1]]
    cams = [{"viewmat": np.eye(4).tolist(), "K": K} for _ in range(3)]
    cams[1]["viewmat"][0][3] = 0.1  # a small step sideways
    result, events = run_op(
        {"ply": str(scene_ply), "cameras": cams, "width": 90, "height": 60, "output": str(tmp_path / "o.mp4")}
    )
    assert result["frames"] == 3 and result["backend"] == "torch" and result["device"] == "cpu"
    assert result["video"] == str(tmp_path / "o.mp4") and result["depth_video"] == str(tmp_path / "o.depth.mp4")
    assert read_video_info(result["video"])["frames"] == 3
    assert read_video_info(result["depth_video"])["size"] == (90, 60)
    assert [e["fraction"] for e in events if e["stage"] == "render"] == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_reference_path_of_the_last_ply_without_depth(tmp_path: Path, scene_ply: Path) -> None:
    state = {"last_ply": str(scene_ply), "last_gaussians": None}
    result, _ = run_op(
        {"trajectory": "shake", "frames": 4, "output": str(tmp_path / "s.mp4"), "depth_output": False, "png_dir": str(tmp_path / "png")},
        state,
    )  # fmt: skip
    assert result["frames"] == 4 and (result["width"], result["height"]) == (90, 60)
    assert "depth_video" not in result and not (tmp_path / "s.depth.mp4").exists()
    assert len(list((tmp_path / "png").glob("*.png"))) == 4


def test_png_only(tmp_path: Path, scene_ply: Path) -> None:
    cams = [{"viewmat": np.eye(4).tolist(), "K": [[80.0, 0, 45], [0, 80.0, 30], [0, 0, 1]]}]
    result, _ = run_op(
        {"ply": str(scene_ply), "cameras": cams, "width": 90, "height": 60, "png_dir": str(tmp_path / "p")}
    )
    assert result["png_dir"] == str(tmp_path / "p") and "video" not in result and "depth_video" not in result
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["frame_0001.png"]


def test_in_memory_prediction_is_used_without_a_ply(tmp_path: Path) -> None:
    # A kept prediction: (1, N, ...) tensors, linear colours; no PLY exists anywhere.
    n = 400
    g = torch.Generator().manual_seed(0)
    gaussians = Gaussians(
        means=(torch.rand(1, n, 3, generator=g) - 0.5) * torch.tensor([2.0, 1.5, 1.0]) + torch.tensor([0, 0, 3.0]),
        singular_values=torch.full((1, n, 3), 0.05),
        quaternions=torch.tensor([1.0, 0, 0, 0]).repeat(1, n, 1),
        colors=torch.rand(1, n, 3, generator=g),
        opacities=torch.full((1, n), 0.8),
    )
    state = {
        "last_ply": str(tmp_path / "missing.ply"),
        "last_gaussians": {"gaussians": gaussians, "image_size": (64, 48), "f_px": 60.0},
    }
    result, _ = run_op({"frames": 2, "output": str(tmp_path / "m.mp4")}, state)
    assert result["frames"] == 2 and (result["width"], result["height"]) == (64, 48)
    first = render_op._cache["scene"]
    assert first.means.data_ptr() == gaussians.means.data_ptr()  # no copy on the same device
    run_op({"frames": 2, "output": str(tmp_path / "m2.mp4")}, state)
    assert render_op._cache["scene"] is first  # kept between requests


def test_the_last_predictions_ply_is_drawn_from_memory(tmp_path: Path, scene_ply: Path) -> None:
    import shutil

    ply_path = tmp_path / "last.ply"
    shutil.copy(scene_ply, ply_path)
    gaussians = Gaussians(
        means=torch.tensor([[[0.0, 0.0, 2.0]]]),
        singular_values=torch.full((1, 1, 3), 0.1),
        quaternions=torch.tensor([[[1.0, 0, 0, 0]]]),
        colors=torch.tensor([[[0.2, 0.4, 0.6]]]),
        opacities=torch.tensor([[0.9]]),
    )
    state = {
        "last_ply": str(ply_path),
        "last_gaussians": {"gaussians": gaussians, "image_size": (16, 12), "f_px": 20.0},
    }
    K = [[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]]
    params = {"ply": str(ply_path), "cameras": [{"viewmat": np.eye(4).tolist(), "K": K}], "width": 16, "height": 12}
    run_op({**params, "output": str(tmp_path / "a.mp4")}, state)
    assert render_op._cache["scene"].count == 1  # the in-memory prediction, not the file's 5,400 splats
    ply_path.touch()  # once the file changes, it is read
    os.utime(ply_path, ns=(1, 1))
    run_op({**params, "output": str(tmp_path / "b.mp4")}, state)
    assert render_op._cache["scene"].count == 90 * 60


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "'output' is required"),
        ({"output": "x.mp4"}, "nothing was predicted yet"),
        ({"output": "x.mp4", "ply": "/nonexistent.ply"}, "cannot read the PLY"),
        ({"output": "x.mp4", "cameras": [{"viewmat": [[1, 0], [0, 1]], "K": np.eye(3).tolist()}]}, "4x4"),
        ({"output": "x.mp4", "trajectory": "zoom"}, "unknown trajectory"),
        ({"output": "x.mp4", "fps": 0}, "'fps'"),
    ],
)
def test_bad_requests(params: dict[str, Any], message: str, scene_ply: Path) -> None:
    if "cameras" in params or "trajectory" in params:
        params = {**params, "ply": str(scene_ply)}
    with pytest.raises(BadRequestError, match=message):
        run_op(params)


def test_cancelled_before_start(tmp_path: Path, scene_ply: Path) -> None:
    with pytest.raises(Cancelled):
        run_op({"ply": str(scene_ply), "output": str(tmp_path / "c.mp4")}, cancel=True)
    assert list(tmp_path.iterdir()) == []


def test_render_through_sharp_serve(tmp_path: Path, scene_ply: Path) -> None:
    path = trajectory.reference_trajectory([2.0, 3.0, 6.0], (90, 60), 80.0, trajectory.TrajectoryParams(num_steps=3))
    cameras = [{"viewmat": v.tolist(), "K": path.K.tolist()} for v in path.viewmats]
    request = protocol.request(
        "7", protocol.RENDER, ply=str(scene_ply), cameras=cameras, width=90, height=60, output=str(tmp_path / "v.mp4")
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sharp_sidecar", "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(protocol.encode(request))
        proc.stdin.flush()
        events = []
        for line in proc.stdout:
            events.append(json.loads(line))  # every stdout line is protocol JSON
            if events[-1]["id"] == "7" and events[-1]["type"] in (protocol.RESULT, protocol.ERROR):
                break
        proc.stdin.write(protocol.encode(protocol.request("8", protocol.SHUTDOWN)))
        proc.stdin.flush()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    final = events[-1]
    assert final["type"] == protocol.RESULT, final
    assert final["result"]["frames"] == 3 and final["result"]["video"] == str(tmp_path / "v.mp4")
    assert [
        e["fraction"] for e in events if e["type"] == protocol.PROGRESS and e["stage"] == "render"
    ] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert read_video_info(tmp_path / "v.mp4")["frames"] == 3
