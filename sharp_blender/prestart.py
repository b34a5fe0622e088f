"""Pre-start: the sidecar and the model are loaded before the first Generate, so its click finds them warm.

When (the ``prestart`` preference): ``AUTO`` starts at file load when a CUDA GPU was seen by an earlier
pre-start or photo on this machine, else when the SHARP panel is first drawn; ``PANEL`` only when the panel
is drawn; ``FILE_LOAD`` at file load (and at the panel); ``OFF`` never (for machines where VRAM is scarce:
the model then loads with the first photo). Whether a CUDA GPU was seen is remembered in a small JSON file
in the extension's user folder.

Pure Python (no bpy): the glue in jobs.py asks :func:`wanted` and submits a ``load`` request once per
client; :class:`Prestart` holds its progress for the panel ("Loading model…").
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MODES = ("AUTO", "PANEL", "FILE_LOAD", "OFF")
TRIGGERS = ("panel", "file_load")
STATE_FILE = "prestart.json"


def wanted(mode: str, trigger: str, cuda_seen: bool) -> bool:
    """Whether ``trigger`` (``panel`` or ``file_load``) should pre-start under the preference ``mode``."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}")
    if mode == "OFF":
        return False
    if trigger == "panel":
        return mode in ("AUTO", "PANEL", "FILE_LOAD")
    return mode == "FILE_LOAD" or (mode == "AUTO" and cuda_seen)


def cuda_seen(folder: Path) -> bool:
    try:
        return bool(json.loads((folder / STATE_FILE).read_text()).get("cuda_seen", False))
    except (OSError, ValueError, AttributeError):
        return False


def remember_device(folder: Path, device: str) -> None:
    """Record that a CUDA device answered (only ever turns the flag on; written atomically)."""
    if not device.startswith("cuda") or cuda_seen(folder):
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps({"cuda_seen": True}))
        os.replace(tmp, folder / STATE_FILE)
    except OSError as exc:  # a read-only user folder only costs the file-load pre-start
        logger.warning("cannot remember the CUDA device in %s: %s", folder, exc)


@dataclass
class Prestart:
    """One ``load`` request's progress, written by the client's reader thread and read by the panel."""

    job: Any = None  # client.Job
    stage: str = ""
    fraction: float = 0.0
    error: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_progress(self, job: Any, progress: Any) -> None:
        with self._lock:
            self.stage = progress.message or progress.stage
            self.fraction = progress.fraction if progress.fraction is not None else self.fraction

    def on_done(self, job: Any) -> None:
        with self._lock:
            if job.error is not None:
                self.error = str(job.error)
            else:
                self.result = dict(job.result or {})

    @property
    def loading(self) -> bool:
        return self.job is not None and not self.job.done

    def label(self) -> str:
        """The panel's line while the model loads ("" once it is done)."""
        if not self.loading:
            return ""
        with self._lock:
            return f"Loading model… {self.stage}".strip()
