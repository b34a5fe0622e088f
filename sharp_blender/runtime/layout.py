"""Where the runtime's parts live in its folder, and whether it is ready. No bpy.

venv/          the environment (made with the chosen Python's venv module)
install.log    every command and every line pip printed, of the last install
ready.json     written last and atomically, only after ``sharp serve`` answered; its absence means
               "not ready" whatever else is in the folder
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import plan

MARKER = "ready.json"
LOG = "install.log"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def log(self) -> Path:
        return self.root / LOG

    @property
    def build(self) -> Path:
        return self.root / "build"

    def python(self, system: str | None = None) -> Path:
        return Path(plan.venv_python(self.venv, system or plan.system_name()))


def read_ready(root: Path) -> dict[str, Any] | None:
    """The ready marker's content if the runtime is ready (marker valid and its Python present), else None."""
    try:
        info = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not Path(str(info.get("python", ""))).is_file():
        return None
    return info


def ready_python(root: Path) -> Path | None:
    info = read_ready(root)
    return Path(info["python"]) if info else None


def remove_runtime(root: Path) -> None:
    """Delete the runtime: the marker first (so an interrupted removal is never 'ready'), then the rest."""
    with contextlib.suppress(FileNotFoundError):
        (root / MARKER).unlink()
    if root.exists():
        shutil.rmtree(root)
