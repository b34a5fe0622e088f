"""`sharp serve`: the Blender add-on's persistent sidecar, speaking :mod:`sharp_sidecar.io.protocol`.

Threads: a reader thread parses stdin lines and answers ``status`` / ``cancel`` / ``shutdown`` at once;
jobs (``predict``, ``render``) queue for one worker thread and run one at a time; the main thread waits
for the end (``shutdown`` or stdin EOF). The model stays loaded between jobs (keyed by checkpoint file
and device) unless a request says ``keep_model: false``.

stdout carries protocol lines only: at start-up the real stdout is kept as a private handle and file
descriptor 1 is pointed at stderr, so stray ``print`` calls and C libraries end up in the log. No
network port is ever opened.

The ops themselves (and how to add one) are in :mod:`.jobs`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import sys
import threading
import time
import traceback
from typing import IO, Any

from .. import __version__
from ..errors import SharpError
from ..io import protocol
from .jobs import JOB_OPS, Job, JobContext, ModelCache

__all__ = ["JOB_OPS", "JobContext", "Server", "run"]

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0  # how long shutdown waits for a running job to notice its cancellation


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
        self._current: Job | None = None  # the job whose final event is still to come
        self._in_op = False  # the worker is inside an op function (even one whose final event went out)
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
            if self._current is job:
                self._current = None  # a status right after the result must not say busy
        self.send(message)

    def status(self) -> dict[str, Any]:
        import torch

        from ..inference.pipeline import resolve_device

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
            "compile": loaded.paths.status() if loaded is not None and loaded.paths is not None else None,
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
            self._in_op = True
            try:
                payload = JOB_OPS[job.op](JobContext(job, self.send, self.models, self.state))
            except BaseException as exc:  # every job ends with exactly one event, whatever happened
                self._finish(job, _error_event(job.id, exc))
                if not isinstance(exc, Exception):
                    raise
            else:
                self._finish(job, protocol.result(job.id, payload))
            finally:
                self._in_op = False
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
        return self._worker.is_alive() and self._in_op


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
    if getattr(args, "precision", "auto") != "auto":
        os.environ["SHARP_PRECISION"] = args.precision  # read by precision.resolve_precision at model load
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
