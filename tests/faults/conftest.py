"""Fault-injection suite (issue 13): each case injects one fault and asserts the exact outcome: the error kind, a
message naming the file and the problem, nothing partial or stale left, existing files byte-identical, and that the
next job still works.

Shared helpers: the tiny-preset checkpoint and the stalling checkpoint server of ``tests/sidecar/conftest.py``
(loaded from there, not copied), a fake-sidecar client factory, photo and PLY makers, a small tmpfs.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.helpers import FAKE, REPO, make_photo

_spec = importlib.util.spec_from_file_location("sidecar_fixtures", REPO / "tests" / "sidecar" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_sidecar_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sidecar_fixtures)
tiny_checkpoint = _sidecar_fixtures.tiny_checkpoint  # the real code path in well under a second per photo
stalling_url = _sidecar_fixtures.stalling_url


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return make_photo(tmp_path / "in" / "photo.jpg")


@pytest.fixture
def fake_client(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """factory(*flags, **client options) -> a SidecarClient on tests/fake_sidecar.py; all are shut down after."""
    from sharp_blender import client as sc

    made: list[sc.SidecarClient] = []

    def factory(*flags: str, **options: object) -> sc.SidecarClient:
        options.setdefault("log_path", tmp_path / "logs" / "sidecar.log")
        made.append(sc.SidecarClient([sys.executable, str(FAKE), *flags], **options))  # type: ignore[arg-type]
        return made[-1]

    yield factory
    for item in made:
        item.shutdown()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (CI runs as root), unmounted after."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.fail(f"mounting a tmpfs needs root: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path) -> object:
    """The tiny-preset predictor on the CPU, loaded once (predict.LoadedModel)."""
    from sharp_sidecar.inference.predict import load_model

    return load_model(tiny_checkpoint, "cpu", precision="fp32")


@pytest.fixture(scope="session")
def nan_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with every floating-point weight NaN (a damaged download that still unpickles)."""
    import torch

    state = torch.load(tiny_checkpoint, weights_only=True)
    path = tmp_path_factory.mktemp("nan-checkpoint") / "nan.pt"
    torch.save({k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}, path)
    return path


@pytest.fixture(scope="session")
def malicious_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch zip whose pickle names a global (here a harmless one): what weights_only exists to refuse."""
    import fractions

    import torch

    path = tmp_path_factory.mktemp("malicious") / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": fractions.Fraction(1, 3)}, path)
    return path
