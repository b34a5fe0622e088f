"""Checks at the sidecar's edges, each in one place: the output location before the network runs, stale
temporary files of ours, and the model's outputs before they become a PLY.

* :func:`prepare_output` runs before any photo is decoded: the path has no NUL, is not one of the inputs (a request
  whose output is its own photo must not overwrite it), is not a folder, its folder can be created and written (a
  real probe file, so read-only mounts, ACLs and full disks all show), and the disk has room for the file. It also
  sweeps our stale temporaries from that folder (:func:`sweep_stale_temporaries`).
* :func:`check_finite` refuses NaN / infinite Gaussians: a damaged checkpoint gives a 100 % NaN PLY otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import BadRequestError, NonFiniteError, OutputError

logger = logging.getLogger(__name__)

# atomic.atomic_path names its temporaries ".<target name>.<mkstemp's 8 random characters>.partial<suffix>".
STALE_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.partial(\.[A-Za-z0-9]{1,8})?$")
STALE_AGE_S = 15 * 60  # older than any write of ours takes; younger ones may belong to a writer still at work
HEADROOM = 1.05  # the file plus 5 %, for the header and the file system's own blocks
VERTEX_BYTES = 14 * 4  # SHARP's 14 float32 vertex properties


def safe_name(path: str | os.PathLike[str]) -> str:
    """A path as printable text whatever its encoding: undecodable bytes (surrogate escapes) as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_path_text(name: str, value: str) -> str:
    """A path parameter as text; a NUL (which no file system accepts) is a bad request, not an internal error."""
    if "\x00" in value:
        raise BadRequestError(f"'{name}' contains a NUL character, which no file name can hold: {value!r}")
    return value


def expected_ply_bytes(num_gaussians: int) -> int:
    return num_gaussians * VERTEX_BYTES + 4096


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.EROFS,):
        return "the file system is read-only"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if exc.errno == errno.ENAMETOOLONG:
        return "the file name is too long"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a file is in the way of the folder"
    return exc.strerror or str(exc)


def output_error(path: str | os.PathLike[str], exc: OSError) -> OutputError:
    """An OSError while writing ``path`` as a message naming the file, the cause and the remedy."""
    return OutputError(
        f"cannot write {safe_name(path)}: {_reason(exc)}. Choose another output folder, or free space or "
        "permissions there"
    )


def sweep_stale_temporaries(folder: Path, max_age_s: float = STALE_AGE_S, now: float | None = None) -> list[Path]:
    """Remove our temporaries (``.x.ply.abcd1234.partial.ply``) older than ``max_age_s`` from ``folder``.

    They are what a killed writer leaves (SIGKILL, power loss); anything else, or anything younger, is kept.
    """
    removed: list[Path] = []
    now = time.time() if now is None else now
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not STALE_TEMPORARY.match(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not entry.is_file(follow_symlinks=False) or now - info.st_mtime < max_age_s:
                continue
            if hasattr(os, "getuid") and info.st_uid != os.getuid():
                continue  # someone else's
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
        logger.info("removed a stale temporary file %s", safe_name(entry.path))
    return removed


def check_folder(folder: Path, target: Path | None = None) -> None:
    """Create ``folder`` if needed and prove it takes a file (a probe written and removed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".sharp-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        what = safe_name(target) if target is not None else f"into {safe_name(folder)}"
        raise OutputError(
            f"cannot write {what}: {_reason(exc)} ({safe_name(folder)}). Choose another output folder"
        ) from None


def prepare_output(
    output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = (), size_bytes: int = 0
) -> Path:
    """Check that ``output`` can be written (see the module docstring) and sweep stale temporaries beside it.

    Raises:
        BadRequestError: a NUL in the path.
        OutputError: the output is an input or a folder, or its folder cannot be created or written, or is too full.
    """
    text = os.fspath(output)
    check_path_text("output", text)
    path = Path(text).expanduser()
    try:
        return _prepare(path, inputs, size_bytes)
    except OSError as exc:  # e.g. a name too long for the file system, found by the first stat
        raise output_error(path, exc) from None


def _prepare(path: Path, inputs: Iterable[str | os.PathLike[str]], size_bytes: int) -> Path:
    for source in inputs:
        if _same_file(path, Path(source)):
            raise OutputError(
                f"the output {safe_name(path)} is the input photo itself; writing it would destroy the photo. "
                "Choose another output name"
            )
    if path.is_dir():
        raise OutputError(f"the output {safe_name(path)} is a folder; give a .ply file name")
    folder = path.parent
    check_folder(folder, path)
    if size_bytes > 0:
        free = shutil.disk_usage(folder).free
        needed = int(size_bytes * HEADROOM)
        if free < needed:
            raise OutputError(
                f"cannot write {safe_name(path)}: {safe_name(folder)} has {free / 2**20:,.1f} MiB free and the file "
                f"needs {needed / 2**20:,.1f} MiB. Free some space or choose another output folder"
            )
    sweep_stale_temporaries(folder)
    return path


def check_finite(gaussians: Any, source: str | os.PathLike[str] = "") -> None:
    """Raise NonFiniteError if any mean, scale, rotation, colour or opacity is NaN or infinite."""
    import torch

    bad = 0
    for tensor in (
        gaussians.means,
        gaussians.singular_values,
        gaussians.quaternions,
        gaussians.colors,
        gaussians.opacities,
    ):
        bad += int((~torch.isfinite(tensor)).sum())
    if bad:
        where = f" for {safe_name(source)}" if source else ""
        raise NonFiniteError(
            f"the model produced {bad:,} NaN or infinite values{where}; no PLY was written. The checkpoint is "
            "probably damaged: delete it and download it again (or pass a good one with -c / the 'checkpoint' "
            "preference)"
        )


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Any:
    """Turn an OSError while writing ``path`` into an OutputError naming it."""
    try:
        yield
    except OSError as exc:
        raise output_error(path, exc) from None
