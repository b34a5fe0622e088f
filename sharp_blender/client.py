"""The sidecar process and its requests, without bpy.

A :class:`SidecarClient` owns one ``sharp serve`` process (any command speaking :mod:`.protocol`):

- started on first use (:meth:`SidecarClient.submit` starts it), restarted on the next request after
  it dies, stopped by :meth:`SidecarClient.shutdown` (the add-on calls it on disable and on quit);
- a reader thread turns stdout lines into :class:`Job` events; a second thread drains stderr into a
  ring buffer whose tail is quoted in errors when the process dies;
- :meth:`SidecarClient.cancel` sends ``cancel`` first; if the job has not ended after a grace period,
  the process is terminated, then killed;
- every wait has a deadline, kept by one watchdog thread per process: ``ready`` within
  ``start_timeout_s``, and while a request is pending, some line from the sidecar at least every
  ``idle_timeout_s`` (progress events count). An expired deadline fails the pending jobs with kind
  ``timeout``, naming the step that stalled and the log file, and stops the process; the next request
  starts a fresh one;
- the reader thread never dies of a bad line: a malformed event fails the job it names (kind
  ``bad_event``) and the rest go on. If the reader itself fails, every job of that process ends with an
  error and the process is stopped, so the client is usable again.

Callbacks run on the reader thread. Blender code must not touch bpy there: :mod:`.jobs` moves events
to the main thread through a queue.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .io import protocol

logger = logging.getLogger(__name__)

# Client-side error kinds, next to the protocol's own (protocol.SIDECAR_DIED is also raised here).
SIDECAR_UNAVAILABLE = "sidecar_unavailable"
TIMEOUT = "timeout"
BAD_EVENT = "bad_event"  # the sidecar sent an event the client cannot use (a wrong type in a field, ...)

# Blender's own Python settings would make the sidecar's venv interpreter load the wrong stdlib.
_FOREIGN_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONNOUSERSITE")
STDERR_LINES = 200
CANCEL_GRACE_S = 5.0
TERMINATE_GRACE_S = 3.0
START_TIMEOUT_S = 180.0  # process start -> ready (importing torch on a cold disk is the slow part)
# Longest silence while a request is pending. CPU forwards and slow downloads send progress at least
# every few minutes; a sidecar silent for this long is stuck (or answered under another id).
IDLE_TIMEOUT_S = 900.0
WATCHDOG_TICK_S = 0.1
LOG_LIMIT_BYTES = 16 << 20
_EVENT_ID = re.compile(rb'"id"\s*:\s*"([^"\\]{1,64})"')
_LOGGED_KINDS = (protocol.SIDECAR_DIED, SIDECAR_UNAVAILABLE, protocol.INTERNAL, TIMEOUT, BAD_EVENT)


def _seconds(value: float | None, variable: str, default: float) -> float:
    if value is not None:
        return float(value)
    try:
        seconds = float(os.environ.get(variable, ""))
    except ValueError:
        return default
    return seconds if seconds > 0 else default


def default_log_path() -> Path:
    """Where the sidecar's stderr is kept for this Blender process (quoted in errors)."""
    return Path(tempfile.gettempdir()) / "sharp_blender" / f"sidecar-{os.getpid()}.log"


class SidecarError(RuntimeError):
    """A request that failed, in the sidecar (``kind`` from the protocol) or around it (process, timeout)."""

    def __init__(
        self, kind: str, message: str, traceback: str | None = None, stderr: str = "", log_path: str = ""
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.traceback = traceback
        self.stderr = stderr
        self.log_path = log_path

    def __str__(self) -> str:
        if self.kind not in _LOGGED_KINDS or not (self.stderr or self.log_path):
            return self.message
        where = f"; full log: {self.log_path}" if self.log_path else ""
        return f"{self.message}\n--- sidecar log (last lines{where}) ---\n{self.stderr}"


@dataclass
class Progress:
    stage: str
    fraction: float | None
    message: str


ProgressCallback = Callable[["Job", Progress], None]
DoneCallback = Callable[["Job"], None]


@dataclass
class Job:
    """One request. Ends with exactly one of ``result`` / ``error``; ``wait()`` blocks until then."""

    id: str
    op: str
    params: dict[str, Any]
    on_progress: ProgressCallback | None = None
    on_done: DoneCallback | None = None
    progress: Progress | None = None
    result: dict[str, Any] | None = None
    error: SidecarError | None = None
    cancel_requested: bool = False
    _generation: int = 0
    _submitted: float = 0.0  # time.monotonic() when sent
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job ends; returns its result or raises its :class:`SidecarError`."""
        if not self._done.wait(timeout):
            raise SidecarError(TIMEOUT, f"the sidecar did not answer {self.op} within {timeout:g} s")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def _progress(self, progress: Progress) -> None:
        self.progress = progress
        if self.on_progress is not None:
            try:
                self.on_progress(self, progress)
            except Exception:  # a broken callback must not kill the reader thread
                logger.exception("progress callback of %s %s failed", self.op, self.id)

    def _finish(self, result: dict[str, Any] | None, error: SidecarError | None) -> None:
        if self._done.is_set():
            return
        self.result, self.error = result, error
        self._done.set()
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:
                logger.exception("done callback of %s %s failed", self.op, self.id)


def sidecar_command(python: str | os.PathLike[str], extra: Sequence[str] = ()) -> list[str]:
    """The command that runs ``sharp serve`` with a given interpreter."""
    return [str(python), "-m", "sharp_sidecar", "serve", *extra]


def default_sidecar_python() -> Path:
    """Where ``scripts/setup.sh`` puts the sidecar's interpreter on this platform (it may not exist)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        native = base / "sharp_blender" / "venv" / "Scripts" / "python.exe"
        # setup.sh run from Git Bash uses the XDG layout with Windows' venv folder names.
        bash = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        posix = bash / "sharp_blender" / "venv" / "Scripts" / "python.exe"
        return posix if posix.exists() and not native.exists() else native
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
        mac = base / "sharp_blender" / "venv" / "bin" / "python"
        if mac.exists():
            return mac
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "sharp_blender" / "venv" / "bin" / "python"


def torch_hub_checkpoint(name: str) -> Path:
    """Where the sidecar's torch hub cache keeps a downloaded checkpoint (``torch.hub.get_dir()`` rules)."""
    if os.environ.get("TORCH_HOME"):
        base = Path(os.environ["TORCH_HOME"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch"
    return base / "hub" / "checkpoints" / name


class SidecarClient:
    """One sidecar process and the requests in flight on it.

    Args:
        command: argv of the sidecar, e.g. ``sidecar_command(python)``.
        env: variables added to the inherited environment (e.g. ``SHARP_CHECKPOINT``).
        cancel_grace_s: how long a cancelled job may take to end before the process is terminated.
        start_timeout_s: deadline for the ``ready`` line after the process starts (default
            ``$SHARP_SIDECAR_START_TIMEOUT``, else :data:`START_TIMEOUT_S`).
        idle_timeout_s: longest silence of the sidecar while a request is pending (default
            ``$SHARP_SIDECAR_IDLE_TIMEOUT``, else :data:`IDLE_TIMEOUT_S`).
        log_path: file that keeps the sidecar's stderr (default :func:`default_log_path`).
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        cancel_grace_s: float = CANCEL_GRACE_S,
        start_timeout_s: float | None = None,
        idle_timeout_s: float | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.command = list(command)
        self.env = dict(env or {})
        self.cancel_grace_s = cancel_grace_s
        self.start_timeout_s = _seconds(start_timeout_s, "SHARP_SIDECAR_START_TIMEOUT", START_TIMEOUT_S)
        self.idle_timeout_s = _seconds(idle_timeout_s, "SHARP_SIDECAR_IDLE_TIMEOUT", IDLE_TIMEOUT_S)
        self.log_path = Path(log_path) if log_path is not None else default_log_path()
        self._log: IO[str] | None = None
        self._log_bytes = 0
        self._started = 0.0
        self._last_line = 0.0
        self._expired: dict[int, SidecarError] = {}  # generation -> the deadline error that stopped it
        self.ready_info: dict[str, Any] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._ready = threading.Event()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._generation = 0

    # -- process -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stderr_tail(self, lines: int = 40) -> str:
        with self._lock:
            return "\n".join(list(self._stderr)[-lines:])

    def start(self) -> None:
        """Start the process unless it runs. Raises SidecarError(sidecar_unavailable) if it cannot start."""
        with self._lock:
            if self.running:
                return
            self._reap()
            self._ready.clear()
            self.ready_info = None
            self._stderr.clear()
            self._stopping = False
            env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_PYTHON_VARIABLES}
            env.update(self.env)
            env["PYTHONUNBUFFERED"] = "1"
            flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
            try:
                proc = subprocess.Popen(
                    self.command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    creationflags=flags,
                )
            except OSError as exc:
                raise SidecarError(
                    SIDECAR_UNAVAILABLE,
                    f"cannot start the SHARP sidecar ({' '.join(self.command)}): {exc.strerror or exc}. "
                    "Run scripts/setup.sh, or set the sidecar's Python in the add-on preferences.",
                ) from exc
            self._proc = proc
            self._generation += 1
            self._started = self._last_line = time.monotonic()
            self._open_log(proc.pid)
            assert proc.stdout is not None and proc.stderr is not None
            self._threads = [
                threading.Thread(
                    target=self._read_stdout,
                    args=(proc, proc.stdout, self._generation),
                    daemon=True,
                    name="sharp-stdout",
                ),
                threading.Thread(target=self._read_stderr, args=(proc.stderr,), daemon=True, name="sharp-stderr"),
                threading.Thread(target=self._watch, args=(proc, self._generation), daemon=True, name="sharp-watchdog"),
            ]
            for thread in self._threads:
                thread.start()
            logger.info("started the sidecar (pid %d): %s", proc.pid, " ".join(self.command))

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Start if needed and wait for the ``ready`` line; returns its status payload."""
        self.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if not self.running:
                raise SidecarError(
                    protocol.SIDECAR_DIED,
                    f"the SHARP sidecar exited during start-up (exit code {self._exit_code()})",
                    stderr=self.stderr_tail(),
                )
            if time.monotonic() > deadline:
                raise SidecarError(
                    TIMEOUT,
                    f"the SHARP sidecar did not start within {timeout:g} s (step: start-up, waiting for 'ready')",
                    stderr=self.stderr_tail(),
                    log_path=str(self.log_path),
                )
        return dict(self.ready_info or {})

    def shutdown(self, timeout: float = 5.0) -> None:
        """Ask the process to exit, then terminate/kill it if it does not. Pending jobs end with an error."""
        with self._lock:
            proc = self._proc
            self._stopping = True
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self._send(protocol.request(f"s{next(self._ids)}", protocol.SHUTDOWN))
                proc.wait(timeout)
            except (SidecarError, subprocess.TimeoutExpired):
                self._stop_process(proc)
        self._fail_all(SidecarError(protocol.CANCELLED, "the SHARP sidecar was shut down"))
        self._reap()

    def restart(self) -> None:
        self.shutdown()
        self.start()

    def _stop_process(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                self._stop_process(proc)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(1.0)
        self._threads = []

    def _exit_code(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    # -- requests ------------------------------------------------------------------------------

    def submit(
        self,
        op: str,
        params: Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        on_done: DoneCallback | None = None,
    ) -> Job:
        """Send one request (starting the sidecar if needed) and return its Job at once."""
        if op not in protocol.OPS:
            raise ValueError(f"unknown op {op!r}")
        self.start()
        job = Job(f"r{next(self._ids)}", op, dict(params or {}), on_progress, on_done)
        with self._lock:
            job._generation = self._generation
            job._submitted = time.monotonic()
            if not self._jobs:
                self._last_line = job._submitted  # the idle clock starts with the first pending request
            self._jobs[job.id] = job
        try:
            self._send(protocol.request(job.id, op, **job.params))
        except SidecarError as exc:
            with self._lock:
                self._jobs.pop(job.id, None)
            job._finish(None, exc)
        return job

    def request(self, op: str, timeout: float | None = None, **params: Any) -> dict[str, Any]:
        """Send one request and block for its result."""
        return self.submit(op, params).wait(timeout)

    def status(self, timeout: float = 120.0) -> dict[str, Any]:
        return self.request(protocol.STATUS, timeout)

    def predict(
        self,
        image: str | os.PathLike[str],
        output: str | os.PathLike[str],
        on_progress: ProgressCallback | None = None,
        on_done: DoneCallback | None = None,
        **options: Any,
    ) -> Job:
        """Queue one photo -> PLY prediction. Options: focal_mm, focal_px, device, checkpoint, keep_model, ..."""
        params = {"image": str(image), "output": str(output)}
        params.update({k: v for k, v in options.items() if v is not None})
        return self.submit(protocol.PREDICT, params, on_progress, on_done)

    def cancel(self, job: Job) -> None:
        """Ask the sidecar to stop ``job``; if it is still running after the grace period, stop the process."""
        if job.done:
            return
        job.cancel_requested = True
        try:
            self._send(protocol.request(f"c{next(self._ids)}", protocol.CANCEL, target=job.id))
        except SidecarError:
            pass  # the process is gone; the reader thread ends the job
        proc = self._proc

        def enforce() -> None:
            if job._done.wait(self.cancel_grace_s) or proc is None:
                return
            logger.warning("the sidecar ignored cancel of %s for %.1f s: terminating it", job.id, self.cancel_grace_s)
            self._stop_process(proc)

        threading.Thread(target=enforce, daemon=True, name="sharp-cancel").start()

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise SidecarError(
                protocol.SIDECAR_DIED,
                "the SHARP sidecar is not running",
                stderr=self.stderr_tail(),
                log_path=str(self.log_path),
            )
        line = protocol.encode(message).encode("utf-8")
        with self._write_lock:
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as exc:
                raise SidecarError(
                    protocol.SIDECAR_DIED,
                    f"the SHARP sidecar stopped reading requests: {exc}",
                    stderr=self.stderr_tail(),
                ) from exc

    # -- reader threads ------------------------------------------------------------------------

    def _open_log(self, pid: int) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
        self._log = None
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "a", encoding="utf-8", errors="backslashreplace")
            self._log.write(f"=== sidecar pid {pid} started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            self._log.flush()
            self._log_bytes = self.log_path.stat().st_size
        except OSError as exc:  # no log file is no reason to fail: the in-memory tail still works
            logger.warning("cannot write the sidecar log %s: %s", self.log_path, exc)
            self._log = None

    def _read_stderr(self, pipe: IO[bytes]) -> None:
        try:
            for raw in iter(pipe.readline, b""):
                text = raw.decode("utf-8", errors="replace").rstrip()
                with self._lock:
                    self._stderr.append(text)
                    log = self._log
                    if log is not None and self._log_bytes < LOG_LIMIT_BYTES:
                        try:
                            log.write(text + "\n")
                            log.flush()
                            self._log_bytes += len(text) + 1
                        except (OSError, ValueError):
                            self._log = None
                logger.debug("sidecar: %s", text)
        except (OSError, ValueError):  # the pipe was closed under us (shutdown); nothing more to read
            pass

    def _read_stdout(self, proc: subprocess.Popen[bytes], pipe: IO[bytes], generation: int) -> None:
        reader_failed: BaseException | None = None
        try:
            for raw in iter(pipe.readline, b""):
                with self._lock:
                    self._last_line = time.monotonic()
                try:
                    message = protocol.decode(raw)
                except protocol.ProtocolError as exc:
                    # Stray prints of libraries land here; they are logged, never fatal. An unreadable event
                    # that still names a pending request (too deeply nested, ...) fails that request.
                    named = _EVENT_ID.search(raw[:4096]) if raw.lstrip().startswith(b"{") else None
                    if named is not None:
                        self._bad_event({"id": named.group(1).decode("utf-8", "replace"), "type": "?"}, exc)
                    else:
                        logger.warning("ignoring a non-protocol line from the sidecar: %s", exc)
                    continue
                if generation != self._generation:
                    continue  # a line still buffered from a process already replaced: its jobs are over
                try:
                    self._dispatch(message)
                except Exception as exc:  # one malformed event fails its own job, never the reader
                    self._bad_event(message, exc)
        except Exception as exc:  # the pipe itself failed: end this process's jobs and the process
            reader_failed = exc
            logger.exception("the sidecar's stdout reader failed")
            self._stop_process(proc)
        code = proc.wait()
        # Give the stderr thread a moment so the crash message includes the last log lines.
        for thread in self._threads:
            if thread.name == "sharp-stderr" and thread is not threading.current_thread():
                thread.join(1.0)
        with self._lock:
            stopping = self._stopping
            expired = self._expired.pop(generation, None)
        if expired is not None:
            self._fail_all(expired, generation)
        elif stopping:
            self._fail_all(SidecarError(protocol.CANCELLED, "the SHARP sidecar was shut down"), generation)
        elif reader_failed is not None:
            self._fail_all(
                SidecarError(
                    protocol.SIDECAR_DIED,
                    f"reading the SHARP sidecar's answers failed ({type(reader_failed).__name__}: {reader_failed}); "
                    "it was stopped and restarts on the next request",
                    stderr=self.stderr_tail(),
                    log_path=str(self.log_path),
                ),
                generation,
            )
        else:
            self._fail_all(
                SidecarError(
                    protocol.SIDECAR_DIED,
                    f"the SHARP sidecar stopped unexpectedly (exit code {code}); it restarts on the next request",
                    stderr=self.stderr_tail(),
                    log_path=str(self.log_path),
                ),
                generation,
            )

    def _bad_event(self, message: dict[str, Any], exc: Exception) -> None:
        request_id = message.get("id")
        with self._lock:
            job = self._jobs.pop(request_id, None) if isinstance(request_id, str) else None
        text = f"the SHARP sidecar sent a malformed {str(message.get('type'))[:40]!r} event ({exc})"
        if job is None:
            logger.warning("%s for no pending request; ignored", text)
            return
        logger.warning("%s for %s %s", text, job.op, job.id)
        job._finish(
            None,
            SidecarError(
                BAD_EVENT,
                f"{text} for {job.op} {job.id}. The sidecar may be a different version than the add-on: update both, "
                "or report it",
                stderr=self.stderr_tail(),
                log_path=str(self.log_path),
            ),
        )

    def _watch(self, proc: subprocess.Popen[bytes], generation: int) -> None:
        """Keep the deadlines of one process (see the module docstring); ends with the process."""
        while proc.poll() is None and not self._stopping:
            time.sleep(WATCHDOG_TICK_S)
            now = time.monotonic()
            with self._lock:
                if generation != self._generation:
                    return
                pending = sorted(
                    (j for j in self._jobs.values() if j._generation == generation), key=lambda j: j._submitted
                )
                silent = now - self._last_line
            ready = self._ready.is_set()
            if not ready and now - self._started > self.start_timeout_s:
                step, limit = "start-up (waiting for 'ready')", self.start_timeout_s
            elif ready and pending and silent > self.idle_timeout_s:  # start-up time has its own deadline
                job = pending[0]
                stage = job.progress.stage if job.progress is not None else "waiting for the first progress event"
                step, limit = f"{job.op} {job.id}, stage {stage}", self.idle_timeout_s
            else:
                continue
            error = SidecarError(
                TIMEOUT,
                f"the SHARP sidecar stalled: no answer for {limit:g} s (step: {step}). It was stopped and restarts "
                "on the next request",
                stderr=self.stderr_tail(),
                log_path=str(self.log_path),
            )
            logger.warning("%s", error.message)
            with self._lock:
                self._expired[generation] = error  # the reader ends the jobs with this, not "stopped unexpectedly"
            # Stop first, then end the jobs: a waiter woken by the error must find the process gone, so its next
            # request starts a fresh one instead of landing on the stuck one.
            self._stop_process(proc)
            self._fail_all(error, generation)
            return

    def _fail_all(self, error: SidecarError, generation: int | None = None) -> None:
        """End the pending jobs (of one process generation, or all) with ``error``."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if generation is None or j._generation == generation]
            for job in jobs:
                del self._jobs[job.id]
        for job in jobs:
            if job.cancel_requested and error.kind != protocol.CANCELLED:
                job._finish(None, SidecarError(protocol.CANCELLED, f"{job.op} was cancelled", stderr=error.stderr))
            else:
                job._finish(None, error)

    def _dispatch(self, message: dict[str, Any]) -> None:
        """Apply one event. Raises (ProtocolError, ...) on a malformed one; the reader fails its job then."""
        kind = message.get("type")
        if kind == protocol.READY:
            info = message.get("result")
            self.ready_info = dict(info) if isinstance(info, dict) else {}
            self._ready.set()
            return
        request_id = message.get("id")
        with self._lock:
            job = self._jobs.get(request_id) if isinstance(request_id, str) else None
        if kind == protocol.PROGRESS and job is not None:
            fraction = message.get("fraction")
            if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
                fraction = None  # progress is cosmetic: a bad fraction shows as "busy", not an error
            job._progress(Progress(str(message.get("stage", ""))[:200], fraction, str(message.get("message", ""))))
        elif kind in (protocol.RESULT, protocol.ERROR):
            self._ready.set()  # a sidecar that skipped `ready` is still alive and answering
            if job is None:
                if kind == protocol.ERROR:
                    logger.warning("sidecar error outside a request: %.500s", message.get("error"))
                return
            if kind == protocol.RESULT:
                payload = message.get("result", {})
                if payload is None:
                    payload = {}
                if not isinstance(payload, dict):
                    raise protocol.ProtocolError(f"'result' is a {type(payload).__name__}, not an object")
                with self._lock:
                    self._jobs.pop(job.id, None)
                job._finish(dict(payload), None)
            else:
                with self._lock:
                    self._jobs.pop(job.id, None)
                job._finish(None, self._event_error(message.get("error")))
        else:
            logger.debug("ignoring sidecar message %.500r", message)

    def _event_error(self, err: Any) -> SidecarError:
        """An ``error`` event's payload (an object as the protocol says, or anything else) as a SidecarError."""
        if isinstance(err, dict):
            kind = err.get("kind")
            text = err.get("message")
            trace = err.get("traceback")
        else:
            kind, text, trace = None, err, None
        return SidecarError(
            kind if isinstance(kind, str) and kind else protocol.INTERNAL,
            str(text)[:4000] if text not in (None, "") else "the sidecar reported an error without a message",
            trace if isinstance(trace, str) else None,
            self.stderr_tail(),
            str(self.log_path),
        )
