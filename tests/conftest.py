"""Shared fixtures: the ../shared reference files, the cached generated weights, the full-forward lock.

Test groups: tests/pure (no bpy, no torch), tests/sidecar (torch on CPU), tests/blender (bpy in
background mode). Full-size model runs are marked ``slow``; they run in CI too.

tests/blender also runs under bpy 5.3 (Python 3.13), in an environment without torch: anything that
needs torch or the real sidecar runs as a subprocess of ``sidecar_python()`` (SHARP_SIDECAR_PYTHON, the
3.11 environment's Python, which scripts/test.sh sets), never in-process.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARP_SHARED") or REPO.parent / "shared").resolve()
REFERENCE = SHARED / "reference"
CACHE = Path(os.environ.get("SHARP_TEST_CACHE") or Path.home() / ".cache" / "sharp_blender-tests")


def sidecar_python() -> str | None:
    """A Python that has torch and the sidecar: $SHARP_SIDECAR_PYTHON, else this one if it has both."""
    explicit = os.environ.get("SHARP_SIDECAR_PYTHON")
    if explicit:
        return explicit
    if importlib.util.find_spec("torch") is not None and importlib.util.find_spec("sharp_sidecar") is not None:
        return sys.executable
    return None


@pytest.fixture(scope="session", name="sidecar_python")
def sidecar_python_fixture() -> str:
    """The sidecar's Python for subprocesses; without one the test is skipped (it fails in CI)."""
    python = sidecar_python()
    if python is None:
        message = "no Python with torch and the sidecar: set SHARP_SIDECAR_PYTHON=/path/to/.venv-test/bin/python"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return python


def pytest_configure(config: pytest.Config) -> None:
    expected = (
        "README.md",
        "make_weights.py",
        "sharp_state_dict_keys.tsv",
        "images",
        "synth_640x480.npz",
        "photo_exif.npz",
    )
    missing = [name for name in expected if not (REFERENCE / name).exists()]
    if missing:
        raise pytest.UsageError(
            f"the shared reference files are missing from {REFERENCE} ({', '.join(missing)}). The tests need the "
            "'shared' folder beside the repository (../shared), or SHARP_SHARED=/path/to/shared."
        )


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def reference_images() -> dict[str, Path]:
    return {
        "synth_640x480": REFERENCE / "images" / "synth_640x480.png",
        "photo_exif": REFERENCE / "images" / "photo_exif.jpg",
    }


@pytest.fixture(scope="session")
def reference_npz(reference_dir: Path):  # type: ignore[no-untyped-def]
    import numpy as np

    cache: dict[str, object] = {}

    def load(name: str):  # type: ignore[no-untyped-def]
        if name not in cache:
            cache[name] = np.load(reference_dir / f"{name}.npz")
        return cache[name]

    return load


def _locked(name: str):  # type: ignore[no-untyped-def]
    CACHE.mkdir(parents=True, exist_ok=True)
    handle = open(CACHE / name, "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


@pytest.fixture(scope="session")
def ref_weights_path(sidecar_python: str) -> Path:
    """The deterministic full-size state_dict of make_weights.py, generated once and cached outside the repo.

    The cache key is a hash of the generator and the key list; generation runs in a child process (so its
    ~3 GB are returned at once) under a file lock (so parallel runs generate it once).
    """
    digest = hashlib.sha256()
    for name in ("make_weights.py", "sharp_state_dict_keys.tsv"):
        digest.update((REFERENCE / name).read_bytes())
    target = CACHE / f"refweights-{digest.hexdigest()[:16]}.pt"
    with _locked("refweights.lock"):
        if not target.is_file():
            partial = target.with_suffix(".partial")
            subprocess.run([sidecar_python, str(REFERENCE / "make_weights.py"), "--out", str(partial)], check=True)
            partial.replace(target)
    return target


@pytest.fixture
def full_forward_lock() -> Iterator[None]:
    """Serialise full-size forwards across processes: each peaks near 9 GB, two at once would not fit in 24 GB."""
    handle = _locked("full-forward.lock")
    try:
        yield
    finally:
        handle.close()
