"""When the add-on pre-starts the sidecar, the remembered CUDA flag, and the panel's loading line (no bpy)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from sharp_blender import prestart


@pytest.mark.parametrize(
    ("mode", "trigger", "cuda", "expected"),
    [
        ("AUTO", "panel", False, True),
        ("AUTO", "file_load", False, False),  # no GPU seen yet: wait for the panel
        ("AUTO", "file_load", True, True),
        ("PANEL", "file_load", True, False),
        ("PANEL", "panel", False, True),
        ("FILE_LOAD", "file_load", False, True),
        ("FILE_LOAD", "panel", False, True),
        ("OFF", "panel", True, False),
        ("OFF", "file_load", True, False),
    ],
)
def test_wanted(mode: str, trigger: str, cuda: bool, expected: bool) -> None:
    assert prestart.wanted(mode, trigger, cuda) is expected


def test_unknown_trigger() -> None:
    with pytest.raises(ValueError, match="trigger"):
        prestart.wanted("AUTO", "startup", False)


def test_cuda_seen_is_remembered(tmp_path: Path) -> None:
    assert not prestart.cuda_seen(tmp_path)
    prestart.remember_device(tmp_path, "cpu")
    assert not prestart.cuda_seen(tmp_path)
    prestart.remember_device(tmp_path, "cuda:0")
    assert prestart.cuda_seen(tmp_path)
    prestart.remember_device(tmp_path, "cpu")  # only ever turned on
    assert prestart.cuda_seen(tmp_path)
    (tmp_path / prestart.STATE_FILE).write_text("{broken")
    assert not prestart.cuda_seen(tmp_path)  # a damaged file reads as "not seen", never raises


def test_loading_label_follows_the_job() -> None:
    job = SimpleNamespace(done=False, error=None, result=None)
    state = prestart.Prestart(job=job)
    state.on_progress(job, SimpleNamespace(stage="load_model", message="loading sharp.pt on cuda", fraction=None))
    assert state.loading and state.label() == "Loading model… loading sharp.pt on cuda"
    job.done, job.result = True, {"device": "cuda", "loaded": True}
    state.on_done(job)
    assert not state.loading and state.label() == "" and state.result["loaded"] is True
