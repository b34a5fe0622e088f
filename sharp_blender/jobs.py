# mypy: disable-error-code="union-attr, attr-defined, arg-type, override, misc, assignment, list-item, func-returns-value, operator"
# (fake-bpy-module types every context member as Optional and every enum as a Literal; bpy glue only.)
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

from . import client, importer, prefs, protocol, render_setup

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".heic", ".heif", ".tif", ".tiff", ".webp", ".bmp")

_client: client.SidecarClient | None = None
_client_key: tuple[Any, ...] | None = None
ACTIVE: PredictRun | None = None  # the run the panel's Cancel button stops


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


def shutdown() -> None:
    """Stop the sidecar (add-on disabled, Blender quitting)."""
    global _client, _client_key
    if _client is not None:
        try:
            _client.shutdown()
        except Exception:  # quitting must never fail because the sidecar misbehaves
            logger.exception("stopping the sidecar failed")
    _client, _client_key = None, None


atexit.register(shutdown)


def collect_images(filepath: str = "", directory: str = "", names: list[str] | None = None) -> list[Path]:
    """Photos from a file, a multi-selection in ``directory``, or every image in a folder (sorted)."""
    if names:
        paths = [Path(bpy.path.abspath(directory)) / n for n in names if n]
    elif filepath:
        path = Path(bpy.path.abspath(filepath))
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    else:
        paths = []
    if not paths:
        raise JobError("no photo selected: choose an image file (or a folder of images)")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise JobError(f"photo not found: {', '.join(missing)}")
    return paths


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


def describe(error: client.SidecarError) -> str:
    if error.kind == protocol.OUT_OF_MEMORY:
        return f"{error}. Try the CPU device, close other GPU programs, or use a smaller photo"
    return str(error)


@dataclass
class PhotoResult:
    image: Path
    object_name: str = ""
    error: str = ""


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
        if job.error is not None:
            result.error = f"{image.name}: {describe(job.error)}"
        else:
            assert job.result is not None
            try:
                was_empty = not context.scene.objects  # a new scene gets the splat render set-up
                imported = importer.import_ply(context, job.result["ply"], self.placement, photo=image)
                result.object_name = imported.splat.name
                if was_empty:
                    render_setup.apply(context.scene)
            except Exception as exc:  # import errors are reported per photo; the objects are cleaned up
                logger.exception("importing %s failed", job.result.get("ply"))
                result.error = f"{image.name}: {exc}"
        self.results.append(result)
        self.job = None
        stop = job.error is not None and job.error.kind in (protocol.CANCELLED, client.SIDECAR_UNAVAILABLE)
        if stop:
            self.cancelled = True
        if not self.cancelled and len(self.results) < len(self.images):
            self._submit(get_client(context))

    def run_blocking(self, context: bpy.types.Context, timeout: float | None = None) -> None:
        """Background mode: run every photo to the end, on this thread."""
        self.start(context)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll(context):
            job = self.job
            if job is not None:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                job._done.wait(remaining)
                if not job.done:
                    self.cancel()
                    raise JobError(f"the sidecar did not finish within {timeout:g} s")
            time.sleep(0.001)
        update_status(context, self)

    def summary(self) -> tuple[list[str], list[str]]:
        made = [r.object_name for r in self.results if r.object_name]
        errors = [r.error for r in self.results if r.error]
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
