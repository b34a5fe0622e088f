"""Main-thread bridge between the sidecar client and Blender: one shared client, photo queues, progress.

The client's callbacks run on its reader thread, so they only put events into a ``queue.Queue``;
:meth:`PredictRun.poll` (called from the modal operator's timer, on the main thread) applies them to
bpy. Under ``bpy.app.background`` timers never fire, so :meth:`PredictRun.run_blocking` waits on each
job instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from . import client, importer, prefs, prestart, render_setup
from .io import protocol

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".heic", ".heif", ".tif", ".tiff", ".webp", ".bmp")

_client: client.SidecarClient | None = None
_client_key: tuple[Any, ...] | None = None
ACTIVE: PredictRun | None = None  # the run the panel's Cancel button stops
PRESTART: prestart.Prestart | None = None  # the pre-start ``load`` request of the current client


class JobError(RuntimeError):
    """An error to show the user as is (what went wrong and what to do)."""


def get_client(context: bpy.types.Context) -> client.SidecarClient:
    """The shared sidecar client for the current preferences (replaced when they change)."""
    global _client, _client_key
    p = prefs.get(context)
    try:
        command = p.command()
    except RuntimeError as exc:
        raise JobError(str(exc)) from exc
    key = (tuple(command),)
    if _client is None or _client_key != key:
        shutdown()
        _client, _client_key = client.SidecarClient(command), key
    return _client


def prestart_model(context: bpy.types.Context, trigger: str) -> bool:
    """Start the sidecar and load the model now, if the ``prestart`` preference wants it for ``trigger``
    (``panel`` or ``file_load``); once per client. Never raises: a missing sidecar or checkpoint is reported
    by the first Generate, as before. Returns whether a ``load`` request was sent."""
    global PRESTART
    if PRESTART is not None and PRESTART.job is not None and getattr(PRESTART, "client", None) is _client:
        return False
    p = prefs.get(context)
    folder = prefs.user_dir()
    if not prestart.wanted(getattr(p, "prestart", "AUTO"), trigger, prestart.cuda_seen(folder)):
        return False
    try:
        options = predict_options(context, 0.0, "")
        sidecar = get_client(context)
    except (JobError, OSError) as exc:
        logger.info("no pre-start: %s", exc)
        return False
    state = prestart.Prestart()

    def done(job: client.Job) -> None:
        state.on_done(job)
        if job.result:
            prestart.remember_device(folder, str(job.result.get("device", "")))

    params = {key: options[key] for key in ("device", "checkpoint") if key in options}
    state.job = sidecar.submit(protocol.LOAD, params, state.on_progress, done)
    state.client = sidecar  # type: ignore[attr-defined]
    PRESTART = state
    if not bpy.app.background:
        bpy.app.timers.register(_redraw_while_loading, first_interval=0.25)
    return True


def _redraw_while_loading() -> float | None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()
    return 0.25 if PRESTART is not None and PRESTART.loading else None


def shutdown() -> None:
    """Stop the sidecar (add-on disabled, Blender quitting)."""
    global _client, _client_key, PRESTART
    PRESTART = None
    if _client is not None:
        try:
            _client.shutdown()
        except Exception:  # quitting must never fail because the sidecar misbehaves
            logger.exception("stopping the sidecar failed")
    _client, _client_key = None, None


atexit.register(shutdown)


def display_name(path: str | os.PathLike[str]) -> str:
    """A file name as text safe to show in Blender and to log, whatever its encoding (bytes as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def printable(text: str) -> str:
    """Text for Blender's UI: file-name bytes that are not UTF-8 (surrogate escapes, e.g. inside a sidecar
    message) as ``\\xNN``; Blender refuses to store strings holding surrogates."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _not_a_photo(path: Path) -> str:
    """Why an entry cannot be sent as a photo, or "" when it can."""
    if "\x00" in str(path):
        return "the name holds a NUL character"
    try:
        if path.is_file():
            return ""
        if path.is_symlink():
            return "a broken link (its target does not exist)"
        if path.is_dir():
            return "a folder, not a photo"
        return "not found" if not path.exists() else "not a regular file"
    except (OSError, ValueError) as exc:
        return f"cannot be read ({exc})"


def collect_photos(
    filepath: str = "", directory: str = "", names: list[str] | None = None
) -> tuple[list[Path], list[str]]:
    """(photos, skipped): photos from a file, a multi-selection in ``directory``, or every image in a folder
    (sorted); ``skipped`` says which entries are not photos and why (a bad entry never blocks the others).

    Raises:
        JobError: nothing selected, the folder cannot be listed, or no entry is usable.
    """
    if names:
        paths = [Path(bpy.path.abspath(directory)) / n for n in names if n]
    elif filepath:
        path = Path(bpy.path.abspath(filepath))
        if path.is_dir():
            try:
                paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            except OSError as exc:
                raise JobError(f"cannot list the folder {display_name(path)}: {exc.strerror or exc}") from None
            if not paths:
                raise JobError(f"no photos in {display_name(path)} (looked for {', '.join(IMAGE_SUFFIXES)})")
        else:
            paths = [path]
    else:
        paths = []
    if not paths:
        raise JobError("no photo selected: choose an image file (or a folder of images)")
    photos: list[Path] = []
    skipped: list[str] = []
    for path in paths:
        reason = _not_a_photo(path)
        if reason:
            skipped.append(f"{display_name(path)}: skipped, {reason}")
        else:
            photos.append(path)
    if not photos:
        raise JobError("no usable photo: " + "; ".join(skipped))
    return photos, skipped


def collect_images(filepath: str = "", directory: str = "", names: list[str] | None = None) -> list[Path]:
    """The photos of :func:`collect_photos` (the skipped entries dropped)."""
    return collect_photos(filepath, directory, names)[0]


def predict_options(context: bpy.types.Context, focal_mm: float, device: str) -> dict[str, Any]:
    """Request parameters from the preferences and the operator; checks the checkpoint first."""
    p = prefs.get(context)
    try:
        p.command()  # no sidecar is the first thing to fix
    except RuntimeError as exc:
        raise JobError(str(exc)) from exc
    options: dict[str, Any] = {
        "device": p.device if device in ("", "PREFS") else device,
        "keep_model": bool(p.keep_model),
    }
    if focal_mm > 0:
        options["focal_mm"] = float(focal_mm)
    checkpoint = p.checkpoint()
    if checkpoint.is_file():
        options["checkpoint"] = str(checkpoint)
    elif p.checkpoint_path:
        raise JobError(f"no SHARP checkpoint at {checkpoint}: fix 'Checkpoint' in the add-on preferences")
    elif (
        not bpy.app.online_access
        and not client.torch_hub_checkpoint(prefs.CHECKPOINT_NAME).is_file()
        and not Path(os.environ.get("SHARP_CHECKPOINT") or "/nonexistent").is_file()  # the sidecar reads it too
    ):
        # Without a file the sidecar would download it: only with Blender's permission to go online.
        raise JobError(
            f"no SHARP checkpoint at {checkpoint} (nor in {client.torch_hub_checkpoint(prefs.CHECKPOINT_NAME).parent}), "
            "and Blender may not go online to download it. Allow online access (Preferences > System > Network), "
            "or download the checkpoint and put it there"
        )
    return options


def unique_output(folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.ply"
    n = 2
    while path.exists():
        path = folder / f"{stem}_{n}.ply"
        n += 1
    return path


def describe(error: BaseException) -> str:
    """Any error as a message for the panel: what went wrong and what to do (the operators' one boundary)."""
    try:
        return printable(_describe(error))
    except UnicodeError:  # lone surrogates that are no file-name bytes: drop them rather than fail here
        return _describe(error).encode("utf-8", "replace").decode("utf-8")


def _describe(error: BaseException) -> str:
    if isinstance(error, client.SidecarError):
        if error.kind == protocol.OUT_OF_MEMORY:
            return f"{error}. Try the CPU device, close other GPU programs, or use a smaller photo"
        return str(error)
    if isinstance(error, JobError | ValueError):  # JobError, ply.PlyError, ExportError, TransformError
        return str(error)
    if isinstance(error, OSError):
        where = f" {display_name(error.filename)}" if error.filename else ""
        return f"cannot use{where}: {error.strerror or error}"
    if isinstance(error, MemoryError):
        return "out of memory: close other programs, or import a smaller file"
    logger.error("unexpected error", exc_info=error)
    return f"unexpected {type(error).__name__}: {error} (details in the system console; please report it)"


@dataclass
class PhotoResult:
    image: Path
    object_name: str = ""
    error: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class SidecarRun:
    """Requests to the shared sidecar whose events are applied on the main thread by :meth:`poll`.

    The client's callbacks only queue events (they run on its reader thread); subclasses say what a finished
    job means (:meth:`_job_done`), when the run is over (:attr:`finished`) and how it shows (:meth:`_show`).
    """

    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    job: client.Job | None = None
    cancelled: bool = False
    stage: str = ""
    fraction: float = 0.0

    @property
    def finished(self) -> bool:
        raise NotImplementedError

    def _job_done(self, context: bpy.types.Context, job: client.Job) -> None:
        raise NotImplementedError

    def _show(self, context: bpy.types.Context) -> None:
        raise NotImplementedError

    def _callbacks(self) -> dict[str, Any]:
        return {
            "on_progress": lambda job, p: self.events.put(("progress", p)),
            "on_done": lambda job: self.events.put(("done", job)),
        }

    def cancel(self) -> None:
        self.cancelled = True
        if self.job is not None and _client is not None:
            _client.cancel(self.job)

    def poll(self, context: bpy.types.Context) -> bool:
        """Apply queued events on the main thread. Returns True when the run is over."""
        while True:
            try:
                kind, payload = self.events.get_nowait()
            except queue.Empty:
                break
            if kind == "progress":
                self.stage = payload.message or payload.stage
                self.fraction = payload.fraction or 0.0
            elif kind == "done":
                self._job_done(context, payload)
        self._show(context)
        return self.finished


@dataclass
class PredictRun(SidecarRun):
    """A queue of photos sent one after another through the shared sidecar, each imported when done."""

    images: list[Path]
    options: dict[str, Any]
    placement: str
    out_dir: Path
    results: list[PhotoResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # entries that were never photos, reported at the end

    @property
    def finished(self) -> bool:
        return len(self.results) == len(self.images) or (self.cancelled and self.job is None)

    def _submit(self, sidecar: client.SidecarClient) -> None:
        image = self.images[len(self.results)]
        output = unique_output(self.out_dir, image.stem)
        self.job = sidecar.predict(image, output, **self._callbacks(), **self.options)

    def start(self, context: bpy.types.Context) -> None:
        self._submit(get_client(context))

    def _show(self, context: bpy.types.Context) -> None:
        update_status(context, self)

    def _job_done(self, context: bpy.types.Context, job: client.Job) -> None:
        image = self.images[len(self.results)]
        result = PhotoResult(image)
        name = display_name(image.name)
        if job.error is not None:
            result.error = f"{name}: {describe(job.error)}"
        else:
            assert job.result is not None
            try:
                ply_path = job.result.get("ply")
                if not isinstance(ply_path, str) or not ply_path:
                    raise JobError(f"the sidecar's answer names no PLY file (got {ply_path!r})")
                was_empty = not context.scene.objects  # a new scene gets the splat render set-up
                imported = importer.import_ply(context, ply_path, self.placement, photo=image)
                result.object_name = imported.splat.name
                result.warnings = list(getattr(imported, "warnings", ()))
                if was_empty:
                    render_setup.apply(context.scene)
            except Exception as exc:  # import errors are reported per photo; the objects are cleaned up
                logger.exception("importing %s failed", job.result.get("ply"))
                result.error = f"{name}: {describe(exc)}"
        self.results.append(result)
        self.job = None
        stop = job.error is not None and job.error.kind in (protocol.CANCELLED, client.SIDECAR_UNAVAILABLE)
        if stop:
            self.cancelled = True
        while not self.cancelled and len(self.results) < len(self.images):
            try:
                self._submit(get_client(context))
                return
            except Exception as exc:  # the next photo cannot even be sent: say so and stop the queue
                self.results.append(PhotoResult(self.images[len(self.results)], error=describe(exc)))
                self.cancelled = True

    def run_blocking(self, context: bpy.types.Context, timeout: float | None = None) -> None:
        """Background mode: run every photo to the end, on this thread.

        Each wait ends: the client's watchdog fails a job whose sidecar never says ready or falls silent (see
        :mod:`.client`), and ``timeout`` bounds the whole run on top of that.
        """
        self.start(context)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll(context):
            job = self.job
            if job is not None:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                job._done.wait(remaining)
                if not job.done:
                    stage = job.progress.stage if job.progress is not None else "waiting for the sidecar"
                    log = _client.log_path if _client is not None else "the system console"
                    self.cancel()
                    raise JobError(
                        f"the sidecar did not finish {display_name(self.images[len(self.results)].name)} within "
                        f"{timeout:g} s (stage: {stage}); its log is {log}"
                    )
            time.sleep(0.001)
        update_status(context, self)

    def summary(self) -> tuple[list[str], list[str]]:
        made = [r.object_name for r in self.results if r.object_name]
        errors = [*self.skipped, *(r.error for r in self.results if r.error)]
        if self.cancelled and len(self.results) < len(self.images):
            errors.append(f"cancelled: {len(self.images) - len(self.results)} photo(s) not generated")
        return made, errors


def update_status(context: bpy.types.Context, run: PredictRun) -> None:
    status = getattr(context.window_manager, "sharp_status", None)
    if status is None:
        return
    done = len(run.results)
    total = len(run.images)
    status.busy = not run.finished
    status.progress = min(1.0, (done + (0.0 if run.finished else run.fraction)) / max(total, 1))
    status.stage = f"{run.stage} ({min(done + 1, total)}/{total})" if not run.finished else ""
    if run.finished:
        made, errors = run.summary()
        status.error = "; ".join(errors)
        status.message = f"Made {', '.join(made)}" if made else ""
