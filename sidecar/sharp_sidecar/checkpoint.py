"""Find, download and read the SHARP checkpoint file (a plain state_dict of tensors).

Where the file comes from, first match wins: an explicit path (``-c`` / the request's
``checkpoint``), the ``SHARP_CHECKPOINT`` environment variable, then torch hub's cache
(``torch.hub.get_dir()/checkpoints/sharp_2572gikvuh.pt``), downloaded from Apple's CDN on first use.

The download goes to ``<file>.partial`` beside the target and is renamed only once every byte has
arrived and the file proves to be a checkpoint (:func:`verify_checkpoint_file`: the size Content-Length
announced, a torch zip archive, and the SHA-256 when one is known), so neither a half-downloaded file
nor a captive portal's HTML page is ever mistaken for one. A later attempt resumes the
partial file with an HTTP Range request when the server allows it (206), and starts over otherwise.
Checking keys and shapes against the model is ``model.checkpoint``'s job; this module only makes sure
the file is a dict of tensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import pickle
import re
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CHECKPOINT_URL = "https://ml-site.cdn-apple.com/models/sharp/sharp_2572gikvuh.pt"
CHECKPOINT_NAME = "sharp_2572gikvuh.pt"
ENV_VAR = "SHARP_CHECKPOINT"
URL_ENV_VAR = "SHARP_CHECKPOINT_URL"  # a mirror of the same file, for sites that cannot reach Apple's CDN
# The official file's SHA-256 (lower-case hex) once it is published; None skips the check.
# $SHARP_CHECKPOINT_SHA256 sets it (e.g. for a mirror).
CHECKPOINT_SHA256: str | None = None
SHA256_ENV_VAR = "SHARP_CHECKPOINT_SHA256"
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0

# progress(bytes_done, bytes_total or None). It may raise (e.g. errors.Cancelled) to stop a download;
# the partial file is kept, so the next attempt resumes.
ProgressCallback = Callable[[int, "int | None"], None]


def hub_checkpoint_path() -> Path:
    """Where torch hub keeps downloaded checkpoints, and so where this one is cached."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / CHECKPOINT_NAME


def how_to_provide() -> str:
    """The remedy part of every checkpoint error message."""
    try:
        cache = str(hub_checkpoint_path())
    except Exception:  # torch missing or its hub dir unreadable: still say something useful
        cache = f"~/.cache/torch/hub/checkpoints/{CHECKPOINT_NAME}"
    return (
        f"Download {CHECKPOINT_URL} by hand and put it at {cache}, or pass its path with -c PATH "
        f"(the add-on's checkpoint preference), or set {ENV_VAR}=PATH."
    )


def resolve_checkpoint(
    path: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: ProgressCallback | None = None,
    url: str | None = None,
) -> Path:
    """The checkpoint file to load, downloading the official one on first use.

    Args:
        path: an explicit file (``-c``); wins over everything else.
        download: fetch the file into the hub cache when no other source has it.
        progress: download progress callback ``(bytes_done, bytes_total or None)``.
        url: where to download from; default ``$SHARP_CHECKPOINT_URL``, else the official CDN.

    Raises:
        CheckpointError: the named file does not exist, or the download is off or failed.
    """
    if path is not None and str(path) != "":
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            raise CheckpointError(f"checkpoint file {explicit} (given with -c / 'checkpoint') does not exist")
        return explicit
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        env_path = Path(from_env).expanduser()
        if not env_path.is_file():
            raise CheckpointError(
                f"checkpoint file {env_path} (from the {ENV_VAR} environment variable) does not exist. "
                f"Fix or unset {ENV_VAR}."
            )
        return env_path
    cached = hub_checkpoint_path()
    if cached.is_file():
        return cached
    if not download:
        raise CheckpointError(f"no SHARP checkpoint at {cached} and downloading is off. {how_to_provide()}")
    url = url or os.environ.get(URL_ENV_VAR, "").strip() or CHECKPOINT_URL
    with _download_lock(cached):
        if cached.is_file():  # another process finished it while this one waited
            return cached
        logger.info("downloading the SHARP checkpoint from %s to %s", url, cached)
        expected = os.environ.get(SHA256_ENV_VAR, "").strip().lower() or CHECKPOINT_SHA256
        download_file(url, cached, progress=progress, verify=lambda p: verify_checkpoint_file(p, url, expected))
    return cached


def _looks_like(head: bytes) -> str:
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "an HTML page (a captive portal, proxy or login page?)"
    if text.startswith((b"{", b"[")):
        return "a JSON document (an error page?)"
    return f"a file starting with {head[:16]!r}"


def verify_checkpoint_file(path: Path, url: str = "", sha256: str | None = None) -> None:
    """Accept a downloaded file only if it is a torch zip archive (and has the expected SHA-256, when known).

    Cheap: reads the zip's central directory, not the 2.8 GB of tensors.

    Raises:
        CheckpointError: naming what arrived instead.
    """
    source = f" from {url}" if url else ""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        with open(path, "rb") as fh:
            head = fh.read(256)
        raise CheckpointError(
            f"the download{source} is not a SHARP checkpoint: it is {_looks_like(head)}, {path.stat().st_size:,} "
            f"bytes. Nothing was saved. If your network needs a sign-in, do that in a browser and run again; "
            f"or {how_to_provide()}"
        ) from None
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        raise CheckpointError(
            f"the download{source} is a zip archive but not a PyTorch checkpoint (no data.pkl). Nothing was saved. "
            f"{how_to_provide()}"
        )
    if sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(block)
        if digest.hexdigest() != sha256.lower():
            raise CheckpointError(
                f"the download{source} has SHA-256 {digest.hexdigest()}, not the expected {sha256}: it is not the "
                f"official checkpoint, or it was damaged on the way. Nothing was saved. {how_to_provide()}"
            )


@contextlib.contextmanager
def _download_lock(target: Path) -> Iterator[None]:
    """One downloader per file across processes (the CLI and the add-on's sidecar may both start one).

    POSIX only (flock, released by the OS if the process dies); elsewhere the download is unguarded.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is downloading %s; waiting for it", target.name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _parse_content_range(value: str | None) -> tuple[int, int | None] | None:
    """'bytes 100-199/1000' -> (100, 1000); total None for '*'."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if match is None:
        return None
    return int(match.group(1)), (None if match.group(3) == "*" else int(match.group(3)))


def _open(url: str, start: int) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "sharp-sidecar"})
    if start > 0:
        request.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(request, timeout=_TIMEOUT_S)


def download_file(
    url: str,
    target: str | os.PathLike[str],
    progress: ProgressCallback | None = None,
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Download ``url`` to ``target`` via ``target.partial``, resuming a partial file where possible.

    ``verify(partial)`` runs on the complete file before it is renamed onto ``target``; if it raises, the
    partial file is deleted (it is not a prefix worth resuming) and the error goes to the caller.

    Raises:
        CheckpointError: HTTP error, network failure, a transfer shorter or longer than Content-Length
            (a short one keeps the partial file for the next attempt to resume), or ``verify``'s error.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    start = partial.stat().st_size if partial.is_file() else 0
    failure = f"downloading the SHARP checkpoint from {url} failed"
    try:
        try:
            response = _open(url, start)
        except urllib.error.HTTPError as exc:
            if exc.code != 416 or start == 0:
                raise
            # The partial file is not a prefix the server accepts (e.g. the file changed): start over.
            logger.warning("server refused to resume at byte %d; downloading again from the start", start)
            partial.unlink()
            start = 0
            response = _open(url, 0)
        with response:
            total: int | None
            if start > 0 and response.status == 206:
                content_range = _parse_content_range(response.headers.get("Content-Range"))
                if content_range is None or content_range[0] != start:
                    raise CheckpointError(
                        f"{failure}: unexpected Content-Range {response.headers.get('Content-Range')!r}"
                    )
                total = content_range[1]
                mode = "ab"
                logger.info("resuming the download at byte %d", start)
            else:
                if start > 0:
                    logger.info("server does not resume downloads; starting again from byte 0")
                start = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length is not None and length.isdigit() else None
                mode = "wb"
            done = start
            with open(partial, mode) as out:
                if progress is not None:
                    progress(done, total)
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
    except urllib.error.HTTPError as exc:
        raise CheckpointError(f"{failure}: HTTP {exc.code} {exc.reason}. {how_to_provide()}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise CheckpointError(f"{failure}: {exc}. Run again to resume the download, or: {how_to_provide()}") from None
    if total is not None and done > total:
        partial.unlink(missing_ok=True)
        raise CheckpointError(
            f"{failure}: the server sent {done:,} bytes where it announced {total:,}; the file was discarded. "
            f"Run again, or: {how_to_provide()}"
        )
    if total is not None and done != total:
        raise CheckpointError(
            f"{failure}: the transfer stopped after {done:,} of {total:,} bytes. "
            f"Run again to resume the download, or: {how_to_provide()}"
        )
    if verify is not None:
        try:
            verify(partial)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, target)
    logger.info("checkpoint saved to %s (%d bytes)", target, done)
    return target


def _torch_load(path: Path, map_location: Any) -> Any:
    import torch

    try:
        # mmap leaves the 2.8 GB on disk until each tensor is copied into the model.
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(path, map_location=map_location, weights_only=True)  # legacy (non-zip) file


def _unreadable(path: Path, exc: BaseException) -> CheckpointError:
    text = str(exc)
    lines = [line.strip() for line in text.split("WeightsUnpickler error:")[-1].splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    if "weights_only" in reason:  # never pass on torch's hint to turn the safety off
        reason = type(exc).__name__
    return CheckpointError(
        f"{path} ({path.stat().st_size:,} bytes) is not a readable PyTorch checkpoint: it is truncated, "
        f"damaged or another kind of file ({reason}). Delete it and fetch it again. {how_to_provide()}"
    )


def load_state_dict_file(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely (``weights_only``) and check that it is a dict of tensors.

    Args:
        path: the ``.pt`` file.
        map_location: where the tensors go (``"cpu"`` keeps them memory-mapped).

    Returns:
        key -> tensor (a ``{"state_dict": {...}}`` wrapper is unwrapped).

    Raises:
        CheckpointError: missing, unreadable, truncated, or not a state_dict of tensors.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist. {how_to_provide()}")
    try:
        loaded = _torch_load(path, map_location)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():
            raise _unreadable(path, exc) from None
        # torch's message suggests loading again with weights_only=False: that would run the file's code.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} is not a SHARP checkpoint: it contains Python objects{what}, which a checkpoint of weights "
            "never holds, so it was refused. Do not load it with any other tool and do not trust its source: "
            f"delete it. {how_to_provide()}"
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise _unreadable(path, exc) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(
            f"{path} holds a {type(loaded).__name__}, not a state_dict (a dict of tensors). {how_to_provide()}"
        )
    bad = [str(key) for key, value in loaded.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{path} is not a SHARP state_dict: {len(bad)} entries are not tensors "
            f"(e.g. {', '.join(bad[:5])}). {how_to_provide()}"
        )
    return loaded
