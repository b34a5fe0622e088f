"""Helpers of the fault-injection suite (imported by its tests and its conftest)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "fake_sidecar.py"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Our temporary files (``.x.ply.abcd1234.partial.ply``, ``*.partial``) anywhere under ``folder``."""
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if ".partial" in p.name or p.name.startswith(".sharp-")
    )


def make_photo(path: Path, size: tuple[int, int] = (64, 48), exif: dict[int, object] | None = None) -> Path:
    rng = np.random.default_rng(len(str(path)))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    if exif:
        data = Image.Exif()
        ifd = data.get_ifd(0x8769)
        for tag, value in exif.items():
            ifd[tag] = value
        image.save(path, exif=data)
    else:
        image.save(path)
    return path


def remount_read_only(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)


def sidecar_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SHARP_CHECKPOINT",)}
    env.update(extra)
    return env
