"""What a compile produced, persisted per machine and software: one verified file per key.

A key names everything the compiled kernels depend on: the store's format, torch, CUDA and Triton versions,
the GPU's name and architecture, the precision policy, the compile mode and the model's shapes (preset and
resolution). Another torch, another GPU or another policy gives another file, so nothing compiled for one
is ever loaded for another. Each file holds a JSON header (the key, the outcome, the seconds the compile
took, a SHA-256 of the payload) and the payload: torch's compile-cache artifacts
(``torch.compiler.save_cache_artifacts``: Inductor's FX graphs, AOTAutograd entries and Triton kernels), which
``load_cache_artifacts`` puts back into the caches before compiling. A failed compile is recorded too, so a
machine where Inductor cannot work (no C compiler) does not try again at every start.

A file that cannot be read, has another key, or whose payload does not match its hash is deleted and
rebuilt; reading never raises.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STORE_VERSION = 1
MAGIC = b"SHARPCC1"
_LENGTH = struct.Struct("<I")


def device_info(device: Any) -> dict[str, str]:
    """The GPU facts a key needs: name and architecture (``sm_90``); ``cpu`` off CUDA."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return {"gpu": "cpu", "arch": "cpu"}
    props = torch.cuda.get_device_properties(device)
    return {"gpu": props.name, "arch": f"sm_{props.major}{props.minor}"}


def software_info() -> dict[str, str]:
    """torch, CUDA and Triton versions (Triton's ``none`` where it is missing)."""
    import torch

    try:
        import triton

        triton_version = str(triton.__version__)
    except ImportError:
        triton_version = "none"
    return {"torch": str(torch.__version__), "cuda": str(torch.version.cuda), "triton": triton_version}


def compile_key(
    precision: str,
    preset: str,
    resolution: int,
    mode: str | None,
    device: dict[str, str],
    software: dict[str, str] | None = None,
) -> dict[str, str]:
    """The key of one compiled configuration (all values strings, so it round-trips through JSON exactly)."""
    return {
        "store": str(STORE_VERSION),
        **(software if software is not None else software_info()),
        **device,
        "precision": precision,
        "mode": mode or "default",
        "preset": preset,
        "resolution": str(resolution),
    }


def key_id(key: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class Entry:
    """One stored compile: its header and payload (the compile-cache artifacts; empty for a failure)."""

    key: dict[str, str]
    status: str  # "ok" or "failed"
    seconds: float
    error: str
    payload: bytes


class CompileStore:
    """A folder of keyed compile records (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path(self, key: dict[str, str]) -> Path:
        return self.folder / f"{key_id(key)}.sharpcc"

    def read(self, key: dict[str, str]) -> Entry | None:
        """The entry for ``key``, or None when there is none; a damaged or mismatched file is deleted."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("cannot read the compile record %s (%s); it will be rebuilt", path, exc)
            return None
        try:
            entry = _parse(data)
            if entry.key != key:
                raise ValueError("its key differs from this configuration's")
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            logger.warning("discarding the damaged compile record %s (%s); it will be rebuilt", path, exc)
            self.discard(key)
            return None
        return entry

    def write(self, key: dict[str, str], payload: bytes, seconds: float, status: str = "ok", error: str = "") -> Path:
        """Store an outcome atomically (a crash leaves the old file or none, never half of one)."""
        header = {
            "key": key,
            "status": status,
            "seconds": round(float(seconds), 3),
            "error": error[:2000],
            "sha256": hashlib.sha256(payload).hexdigest(),
            "size": len(payload),
            "written": time.time(),
        }
        blob = json.dumps(header, sort_keys=True).encode()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(MAGIC + _LENGTH.pack(len(blob)) + blob + payload)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def discard(self, key: dict[str, str]) -> None:
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("cannot delete %s: %s", self.path(key), exc)


def _parse(data: bytes) -> Entry:
    if not data.startswith(MAGIC):
        raise ValueError("not a compile record")
    start = len(MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    header = json.loads(data[start : start + length].decode())
    payload = data[start + length :]
    if len(payload) != header["size"] or hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise ValueError("its payload is truncated or corrupt")
    if header["status"] not in ("ok", "failed"):
        raise ValueError(f"unknown status {header['status']!r}")
    key = header["key"]
    if not isinstance(key, dict):
        raise ValueError("no key")
    return Entry(key, header["status"], float(header["seconds"]), str(header["error"]), payload)


def load_artifacts(store: CompileStore, key: dict[str, str], entry: Entry) -> bool:
    """Put an entry's compile-cache artifacts back into torch's caches; a payload torch refuses is discarded."""
    if entry.status != "ok" or not entry.payload:
        return False
    import torch

    try:
        info = torch.compiler.load_cache_artifacts(entry.payload)  # None when torch cannot read them
        problem = "torch could not read them" if info is None else ""
    except Exception as exc:  # an unreadable payload must cost a rebuild, never the start-up
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        logger.warning("discarding the stored compile artifacts (%s); they will be rebuilt", problem)
        store.discard(key)
        return False
    return True


def save_artifacts(store: CompileStore, key: dict[str, str], seconds: float) -> Path | None:
    """Store what this process compiled so far (torch's mega-cache) under ``key``; None if that failed."""
    import torch

    try:
        artifacts = torch.compiler.save_cache_artifacts()
        payload = artifacts[0] if artifacts is not None else b""
        return store.write(key, payload, seconds)
    except Exception as exc:  # a full disk or a torch without mega-cache must not break the compiled path
        logger.warning("could not store the compile artifacts: %s", exc)
        return None
