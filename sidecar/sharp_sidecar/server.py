"""`sharp serve`: the Blender add-on's persistent sidecar, speaking :mod:`sharp_sidecar.protocol`.

Threads: a reader thread parses stdin lines and answers ``status`` / ``cancel`` / ``shutdown`` at once;
jobs (``predict``, ``render``) queue for one worker thread and run one at a time; the main thread waits
for the end (``shutdown`` or stdin EOF). The model stays loaded between jobs (keyed by checkpoint file
and device) unless a request says ``keep_model: false``.

stdout carries protocol lines only: at start-up the real stdout is kept as a private handle and file
descriptor 1 is pointed at stderr, so stray ``print`` calls and C libraries end up in the log. No
network port is ever opened.

Adding an op: write ``def my_op(ctx: JobContext) -> dict`` (read ``ctx.params``, report with
``ctx.progress``, call ``ctx.check_cancelled()`` between steps, raise :class:`errors.SharpError`
subclasses for what a user can fix) and add it to :data:`JOB_OPS` under its protocol name.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from . import __version__, protocol
from .errors import BadRequestError, Cancelled, SharpError

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0  # how long shutdown waits for a running job to notice its cancellation
_DOWNLOAD_STEP = 0.01  # report download progress every 1 %


@dataclass
class Job:
    id: str
    op: str
    params: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"  # queued -> running -> finished


class ModelCache:
    """At most one loaded predictor, reused while the checkpoint file and device stay the same."""

    def __init__(self) -> None:
        self.loaded: Any = None  # predict.LoadedModel
        self._key: tuple[Any, ...] | None = None

    def get(self, checkpoint: str | None, device: str, ctx: JobContext) -> tuple[Any, bool]:
        """The model for this checkpoint and device, loading (and downloading) it if needed.

        Returns:
            (predict.LoadedModel, whether it was loaded by this call).
        """
        from .checkpoint import resolve_checkpoint
        from .pipeline import resolve_device
        from .predict import load_model

        target = resolve_device(device)
        path = resolve_checkpoint(checkpoint, progress=ctx.download_progress)
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(target))
        if self.loaded is not None and key == self._key:
            return self.loaded, False
        self.drop()  # never hold two 2.6 GB models at once
        ctx.check_cancelled("load_model")
        ctx.progress("load_model", None, f"loading {path.name} on {target}")
        self.loaded = load_model(path, str(target))
        self._key = key
        return self.loaded, True

    def drop(self) -> None:
        if self.loaded is None:
            return
        device = self.loaded.device
        self.loaded, self._key = None, None
        import gc

        gc.collect()
        if getattr(device, "type", "") == "cuda":
            import torch

            torch.cuda.empty_cache()
        logger.info("model unloaded")


class JobContext:
    """What an op function sees: its request, progress and cancellation, and the server's shared state.

    Attributes:
        id: the request id.
        params: the request's params.
        models: the server's model cache.
        state: kept between jobs; ``predict`` sets ``last_ply`` (the PLY path it wrote) and
            ``last_gaussians`` ({gaussians, image_size, f_px} while the model is kept, else None).
    """

    def __init__(self, server: Server, job: Job) -> None:
        self._server = server
        self._job = job
        self.id = job.id
        self.params = job.params
        self.models = server.models
        self.state = server.state
        self._download_reported = -1.0

    def progress(self, stage: str, fraction: float | None = None, message: str = "") -> None:
        if self._job.state != "finished":
            self._server.send(protocol.progress(self.id, stage, fraction, message))

    def cancelled(self) -> bool:
        return self._job.cancel.is_set()

    def check_cancelled(self, stage: str = "") -> None:
        if self.cancelled():
            raise Cancelled(f"cancelled before the {stage} stage" if stage else "cancelled")

    def download_progress(self, done: int, total: int | None) -> None:
        """Checkpoint download callback: throttled progress events; raises Cancelled to stop the download."""
        self.check_cancelled("download")
        fraction = None if not total else done / total
        if fraction is None or fraction - self._download_reported >= _DOWNLOAD_STEP or done == total:
            self._download_reported = fraction if fraction is not None else self._download_reported
            size = f"{done / 2**20:,.0f} of {total / 2**20:,.0f} MiB" if total else f"{done / 2**20:,.0f} MiB"
            self.progress("download", fraction, f"downloading the checkpoint: {size}")


JobOp = Callable[[JobContext], dict[str, Any]]


def _string(params: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise BadRequestError(f"'{name}' is required (a path)")
        return None
    if not isinstance(value, str):
        raise BadRequestError(f"'{name}' must be a string, got {type(value).__name__}")
    return value


def _focal(params: dict[str, Any], name: str) -> float | None:
    """A focal override; null or 0 mean "from the photo's EXIF"."""
    value = params.get(name)
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadRequestError(f"'{name}' must be a positive number (0 or null = from EXIF), got {value!r}")
    return float(value)


def predict_op(ctx: JobContext) -> dict[str, Any]:
    """``predict``: one photo -> one PLY, with the model kept warm between requests."""
    from .predict import predict_file

    params = ctx.params
    image, output = _string(params, "image"), _string(params, "output")
    assert image is not None and output is not None
    focal_mm, focal_px = _focal(params, "focal_mm"), _focal(params, "focal_px")
    device = _string(params, "device", required=False) or "auto"
    if device not in ("auto", "cuda", "mps", "cpu"):
        raise BadRequestError(f"'device' must be auto, cuda, mps or cpu, got {device!r}")
    keep_model = params.get("keep_model", True) is not False
    ctx.check_cancelled("checkpoint")
    ctx.progress("checkpoint", None, "finding the checkpoint")
    try:
        loaded, fresh = ctx.models.get(_string(params, "checkpoint", required=False), device, ctx)
        ctx.check_cancelled("read_image")
        result = predict_file(
            loaded,
            image,
            output,
            focal_mm=focal_mm,
            focal_px=focal_px,
            plain=bool(params.get("plain_ply", False)),
            progress=ctx.progress,
            cancelled=ctx.cancelled,
        )
    finally:
        if not keep_model:
            ctx.models.drop()
    ctx.state["last_ply"] = str(result.ply)
    # The render op draws the last prediction straight from memory when no PLY is named.
    ctx.state["last_gaussians"] = (
        {"gaussians": result.gaussians, "image_size": result.image_size, "f_px": result.f_px} if keep_model else None
    )
    payload = result.as_dict()
    if fresh:
        payload["timings"] = {"load_model": loaded.load_s, **payload["timings"]}
    payload["device"] = str(loaded.device)
    return payload


def lazy_op(target: str) -> JobOp:
    """An op implemented in another module (``".module:function"``), imported on first use."""
    module_name, function_name = target.split(":")

    def op(ctx: JobContext) -> dict[str, Any]:
        try:
            module = importlib.import_module(module_name, __package__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}{module_name}":
                raise  # a dependency of that module is missing: a real error, with its traceback
            raise BadRequestError(f"{ctx._job.op!r} is not available in this sidecar version") from None
        return getattr(module, function_name)(ctx)  # type: ignore[no-any-return]

    return op


# The ops that queue for the worker thread, by protocol name (render lives in render_op.py).
JOB_OPS: dict[str, JobOp] = {protocol.PREDICT: predict_op, protocol.RENDER: lazy_op(".render_op:render_op")}


def _error_event(job_id: str, exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, SharpError):
        return protocol.error(job_id, exc.code, str(exc))
    if isinstance(exc, MemoryError):
        return protocol.error(job_id, protocol.OUT_OF_MEMORY, "out of memory (RAM); close other programs and retry")
    trace = "".join(traceback.format_exception(exc))
    logger.error("internal error in request %s:\n%s", job_id, trace)
    return protocol.error(job_id, protocol.INTERNAL, f"internal error: {type(exc).__name__}: {exc}", trace)


class Server:
    """The request loop over one input and one output stream (the process's stdin/stdout in ``run``)."""

    def __init__(self, input_stream: IO[bytes], output_stream: IO[str]) -> None:
        self._in = input_stream
        self._out = output_stream
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._jobs: dict[str, Job] = {}  # not finished yet
        self._current: Job | None = None
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="sharp-worker", daemon=True)
        self.models = ModelCache()
        self.state: dict[str, Any] = {}

    # -- output ----------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        line = protocol.encode(message)
        with self._write_lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (BrokenPipeError, OSError, ValueError):
                self._stop.set()  # the client is gone; nothing more to say

    def _finish(self, job: Job, message: dict[str, Any]) -> None:
        """Send the one final event of ``job`` (later attempts are dropped)."""
        with self._lock:
            if job.state == "finished":
                return
            job.state = "finished"
            self._jobs.pop(job.id, None)
        self.send(message)

    def status(self) -> dict[str, Any]:
        import torch

        from .pipeline import resolve_device

        loaded = self.models.loaded
        with self._lock:
            busy = self._current is not None
            queued = sum(1 for job in self._jobs.values() if job.state == "queued")
        return {
            "version": __version__,
            "protocol": protocol.PROTOCOL_VERSION,
            "torch": torch.__version__,
            "device": str(loaded.device if loaded is not None else resolve_device("auto")),
            "cuda": torch.cuda.is_available(),
            "model_loaded": loaded is not None,
            "checkpoint": str(loaded.checkpoint) if loaded is not None else None,
            "busy": busy,
            "queued": queued,
            "ops": sorted(set(protocol.OPS) - set(protocol.JOB_OPS) | set(JOB_OPS)),
            "pid": os.getpid(),
        }

    # -- input -----------------------------------------------------------------------------------

    def _read(self) -> None:
        for raw in iter(self._in.readline, b""):
            if not raw.strip():
                continue
            try:
                self._handle(raw)
            except Exception as exc:  # the reader must survive anything a request does
                self.send(_error_event("", exc) | {"id": None})
            if self._stop.is_set():
                return
        logger.info("stdin closed: stopping")
        self._stop_all(None)

    def _handle(self, raw: bytes) -> None:
        try:
            message = protocol.decode(raw)
        except protocol.ProtocolError as exc:
            self.send(protocol.error(None, protocol.BAD_REQUEST, str(exc)))
            return
        try:
            request_id, op, params = protocol.parse_request(message)
        except protocol.ProtocolError as exc:
            raw_id = message.get("id")
            self.send(protocol.error(raw_id if isinstance(raw_id, str) else None, protocol.BAD_REQUEST, str(exc)))
            return
        with self._lock:
            duplicate = request_id in self._jobs
        if duplicate:
            self.send(protocol.error(request_id, protocol.BAD_REQUEST, f"request id {request_id!r} is still in use"))
        elif op == protocol.STATUS:
            self.send(protocol.result(request_id, self.status()))
        elif op == protocol.CANCEL:
            target = params.get("target")
            self.send(protocol.result(request_id, {"cancelled": self._cancel(target)}))
        elif op == protocol.SHUTDOWN:
            self._stop_all(request_id)
        elif op not in JOB_OPS:
            self.send(
                protocol.error(request_id, protocol.BAD_REQUEST, f"op {op!r} is not available in this sidecar version")
            )
        else:
            job = Job(request_id, op, params)
            with self._lock:
                self._jobs[request_id] = job
            self._queue.put(job)

    def _cancel(self, target: Any) -> bool:
        with self._lock:
            job = self._jobs.get(target) if isinstance(target, str) else None
        if job is None:
            return False
        job.cancel.set()
        if job.state == "queued":
            self._finish(job, protocol.error(job.id, protocol.CANCELLED, "cancelled before it started"))
        return True

    def _stop_all(self, shutdown_id: str | None) -> None:
        """Cancel everything, give the running job a moment to stop, answer ``shutdown_id`` and stop."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            self._cancel(job.id)
        self._queue.put(None)
        if self._worker.is_alive():
            self._worker.join(SHUTDOWN_GRACE_S)
        for job in jobs:  # a job that did not stop in time still gets its one final event
            self._finish(job, protocol.error(job.id, protocol.CANCELLED, "the sidecar is shutting down"))
        if shutdown_id is not None:
            self.send(protocol.result(shutdown_id, {}))
        self._stop.set()

    # -- jobs ------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.state != "queued":
                    continue  # cancelled while waiting
                job.state = "running"
                self._current = job
            started = time.perf_counter()
            try:
                payload = JOB_OPS[job.op](JobContext(self, job))
            except BaseException as exc:  # every job ends with exactly one event, whatever happened
                self._finish(job, _error_event(job.id, exc))
                if not isinstance(exc, Exception):
                    raise
            else:
                self._finish(job, protocol.result(job.id, payload))
            finally:
                with self._lock:
                    self._current = None
                logger.info("%s %s ended after %.2f s", job.op, job.id, time.perf_counter() - started)

    def serve(self) -> int:
        """Announce readiness, run until shutdown or EOF; returns the exit code."""
        self.send(protocol.ready(self.status()))
        self._worker.start()
        reader = threading.Thread(target=self._read, name="sharp-reader", daemon=True)
        reader.start()
        self._stop.wait()
        return 0

    @property
    def worker_busy(self) -> bool:
        return self._worker.is_alive() and self._current is not None


def _protocol_stdout() -> IO[str]:
    """Keep the real stdout for protocol lines; send everything else written to fd 1 to stderr."""
    sys.stdout.flush()
    private = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(private, "w", encoding="utf-8", newline="\n")


def run(args: argparse.Namespace) -> int:
    """The ``sharp serve`` command."""
    if getattr(args, "verbose", 0) == 0:
        logging.getLogger().setLevel(logging.INFO)  # the add-on quotes the log tail when something fails
    output = _protocol_stdout()
    server = Server(sys.stdin.buffer, output)
    logger.info("sharp serve %s ready (pid %d)", __version__, os.getpid())
    code = server.serve()
    with contextlib.suppress(OSError, ValueError):
        output.flush()
    if server.worker_busy:
        # A job ignored cancellation; torch work in a daemon thread must not race interpreter teardown.
        logging.shutdown()
        os._exit(code)
    return code
