"""The runtime installer without Blender: failure wording, the ready marker, the event queue, early refusals."""

from __future__ import annotations

import json
import queue
import shutil
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from sharp_blender.runtime import failures, installer, layout, plan
from sharp_blender.runtime.failures import InstallError
from sharp_blender.runtime.installer import Installer, Options

REPO = Path(__file__).resolve().parents[2]
LINUX_CPU = plan.Machine("linux", "x86_64")


def _options(tmp_path: Path, **kw: object) -> Options:
    values: dict[str, object] = {
        "root": tmp_path / "my runtime",
        "sidecar_dir": REPO / "sidecar",
        "base_python": Path(sys.executable),
        "machine": LINUX_CPU,
        "torch_requirement": "torch==2.13.0",
    }
    values.update(kw)
    return Options(**values)  # type: ignore[arg-type]


def _fake_python(tmp_path: Path, version: list[int]) -> Path:
    exe = tmp_path / "old python"
    exe.write_text(f"#!/bin/sh\necho '{json.dumps({'version': version, 'venv': True, 'ensurepip': True})}'\n")
    exe.chmod(0o755)
    return exe


@pytest.mark.parametrize(
    ("lines", "offline", "kind", "says"),
    [
        (
            [
                "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError("
                "'<pip._vendor.urllib3.connection.HTTPSConnection>: Failed to establish a new connection: "
                "[Errno -3] Temporary failure in name resolution')'",
                "ERROR: No matching distribution found for torch==2.13.0",
            ],
            False,
            failures.NETWORK,
            "no network",
        ),
        (
            [
                "Installing collected packages: torch",
                "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device",
            ],
            False,
            failures.DISK,
            "no disk space",
        ),
        (
            ["ERROR: No matching distribution found for gsplat<1.6,>=1.5.3"],
            True,
            failures.PIP,
            "offline wheels folder has no gsplat",
        ),
        (["ERROR: No matching distribution found for torch>=2.4"], False, failures.PIP, "pip found no torch>=2.4"),
        (
            [
                "ERROR: Cannot install torch==2.13.0 because these package versions have conflicting dependencies.",
                "    The user requested torch==2.13.0",
                "    The user requested (constraint) torch<=2.14.1",
                "ERROR: ResolutionImpossible: for help visit the pip documentation",
            ],
            True,
            failures.PIP,
            "offline wheels folder has no torch==2.13.0 for this Python and OS that pip's constraints allow",
        ),
        (
            ["error: subprocess-exited-with-error", "x Building wheel did not run successfully."],
            False,
            failures.PIP,
            "exit code 1",
        ),
    ],
)
def test_pip_failures_in_plain_words(lines: list[str], offline: bool, kind: str, says: str) -> None:
    error = failures.explain_pip_failure("installing torch", 1, lines, offline)
    assert error.kind == kind and says in error.message and "installing torch" in error.message
    assert error.tail.splitlines()[-1] == lines[-1]  # pip's own last line is kept


def test_tail_is_the_last_lines_only() -> None:
    lines = [f"line {i}" for i in range(100)]
    tail = failures.explain_pip_failure("x", 2, lines, False).tail.splitlines()
    assert tail == lines[-failures.TAIL_LINES :]


def test_ready_marker_needs_valid_json_and_an_existing_python(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    root.mkdir()
    assert layout.read_ready(root) is None
    (root / layout.MARKER).write_text("{half a fi")
    assert layout.read_ready(root) is None
    (root / layout.MARKER).write_text(json.dumps({"python": str(root / "venv" / "bin" / "python")}))
    assert layout.read_ready(root) is None  # the environment is gone
    (root / layout.MARKER).write_text(json.dumps({"python": sys.executable, "torch": "2.13.0"}))
    assert layout.ready_python(root) == Path(sys.executable)
    layout.remove_runtime(root)
    assert not root.exists() and layout.read_ready(root) is None
    layout.remove_runtime(root)  # nothing there: no error


def test_offline_refusal_creates_no_environment(tmp_path: Path) -> None:
    with pytest.raises(InstallError) as caught:
        Installer(_options(tmp_path, online=False)).run()
    assert caught.value.kind == failures.OFFLINE
    assert "pip download --dest sharp-wheels torch==2.13.0" in caught.value.message
    assert all(req in caught.value.message for req in installer.sidecar_requirements(REPO / "sidecar"))
    assert not (tmp_path / "my runtime" / "venv").exists()
    assert "Blender's online access is off" in (tmp_path / "my runtime" / layout.LOG).read_text()


def test_unsupported_python_in_a_thread_reports_through_the_queue(tmp_path: Path) -> None:
    events: queue.Queue[installer.Event] = queue.Queue()
    job = Installer(_options(tmp_path, base_python=_fake_python(tmp_path, [3, 9, 2])), events)
    job.start().join(30)
    assert not job.running
    seen = []
    while not events.empty():
        seen.append(events.get_nowait())
    assert seen[0].kind == "progress" and seen[-1].kind == "failed"
    assert seen[-1].error is not None and seen[-1].error.kind == failures.PYTHON
    assert "Python 3.9.2" in seen[-1].message and "Runtime Python" in seen[-1].message


def test_a_failed_repair_removes_the_old_ready_marker(tmp_path: Path) -> None:
    root = tmp_path / "my runtime"
    root.mkdir()
    (root / layout.MARKER).write_text(json.dumps({"python": sys.executable}))
    assert layout.read_ready(root) is not None
    with pytest.raises(InstallError):
        Installer(_options(tmp_path, base_python=_fake_python(tmp_path, [3, 8, 0]))).run()
    assert layout.read_ready(root) is None and not (root / layout.MARKER).exists()


def test_too_little_disk_space_is_said_before_anything_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, 9 << 30, 300 << 20))
    with pytest.raises(InstallError, match=r"no disk space: 0\.3 GB free .* needs about 2 GB") as caught:
        Installer(_options(tmp_path)).run()
    assert caught.value.kind == failures.DISK and not (tmp_path / "my runtime" / "venv").exists()


def test_missing_sidecar_source_and_missing_wheels_folder(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="sidecar's source is missing") as caught:
        Installer(_options(tmp_path, sidecar_dir=tmp_path / "nothing")).run()
    assert caught.value.kind == failures.SOURCE
    with pytest.raises(InstallError, match=r"offline wheels folder .* does not exist"):
        Installer(_options(tmp_path, online=False, wheels_dir=tmp_path / "usb")).run()


def test_cancel_before_the_first_command(tmp_path: Path) -> None:
    job = Installer(_options(tmp_path))
    job.cancel()
    with pytest.raises(InstallError, match="install cancelled") as caught:
        job.run()
    assert caught.value.kind == failures.CANCELLED and layout.read_ready(tmp_path / "my runtime") is None
