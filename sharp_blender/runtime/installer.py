"""Build the SHARP runtime: a venv with torch and the sidecar, checked by starting ``sharp serve``. No bpy.

The runtime folder's layout and its ready marker are in :mod:`.layout`; failures in :mod:`.failures`.

:class:`Installer` runs synchronously (:meth:`Installer.run`, for scripts and background mode) or in a
thread (:meth:`Installer.start`); either way it reports :class:`Event` objects to an optional queue that
the UI drains, and :meth:`Installer.cancel` stops the running command.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import client
from ..io.atomic import atomic_path
from . import plan
from .failures import CANCELLED, DISK, OFFLINE, PIP, PYTHON, SOURCE, VERIFY, InstallError, explain_pip_failure
from .layout import Layout

VERIFY_TIMEOUT_S = 600.0  # the first import of torch on a cold disk can take a minute or more


@dataclass(frozen=True)
class Event:
    kind: str  # "progress" (fraction, message), "log" (one output line), "done" (result), "failed" (error)
    fraction: float = 0.0
    message: str = ""
    result: dict[str, Any] | None = None
    error: InstallError | None = None


def sidecar_requirements(sidecar_dir: Path) -> list[str]:
    """The sidecar's dependencies other than torch, from its pyproject.toml (for the offline download list)."""
    project = tomllib.loads((sidecar_dir / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [r for r in project.get("dependencies", []) if not r.replace(" ", "").startswith("torch")]


@dataclass
class Options:
    root: Path  # the runtime folder
    sidecar_dir: Path  # the sidecar's source tree (pyproject.toml, sharp_sidecar/)
    base_python: Path  # the Python that makes the venv (Blender's own by default)
    online: bool = True  # Blender's "Allow Online Access"
    wheels_dir: Path | None = None  # offline: install only from this folder
    torch_requirement: str | None = None  # e.g. "torch==2.13.0"; None: plan.DEFAULT_TORCH
    torch_index: str | None = None  # the torch step's --index-url
    machine: plan.Machine | None = None  # None: detected
    verify_timeout: float = VERIFY_TIMEOUT_S
    env: dict[str, str] = field(default_factory=dict)  # added to the commands' environment


# Share of the progress bar per step (torch is most of the download).
_STEPS = (("python", 0.02), ("venv", 0.06), ("torch", 0.62), ("sidecar", 0.2), ("verify", 0.1))


def _stop_tree(proc: subprocess.Popen[str]) -> None:
    """Terminate a command and the processes it started (pip's build backends), which hold its output pipe."""
    try:
        if sys.platform == "win32":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, timeout=30)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
    except (OSError, subprocess.SubprocessError):
        proc.terminate()


class Installer:
    def __init__(self, options: Options, events: queue.Queue[Event] | None = None) -> None:
        self.options = options
        self.layout = Layout(options.root)
        self.events = events
        self.fraction = 0.0
        self.message = ""
        self.tail: deque[str] = deque(maxlen=200)
        self._cancel = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._log: Any = None
        self._span = 0.0
        self._t0 = time.monotonic()

    # -- control ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def cancel(self) -> None:
        """Stop at once: the running command is terminated; the runtime stays 'not ready'."""
        self._cancel.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            _stop_tree(proc)

    def start(self) -> threading.Thread:
        def work() -> None:
            with contextlib.suppress(InstallError):
                self.run()

        self._thread = threading.Thread(target=work, name="sharp-runtime-install", daemon=True)
        self._thread.start()
        return self._thread

    def run(self) -> dict[str, Any]:
        """Install (or repair/update) the runtime; returns the ready marker's content. Raises InstallError."""
        try:
            result = self._run()
        except InstallError as exc:
            self._say(f"FAILED: {exc}")
            self._emit(Event("failed", self.fraction, exc.message, error=exc))
            raise
        except Exception as exc:  # a bug or an OS error: still a plain message, never a half-ready runtime
            error = InstallError(PIP, f"the installer failed: {exc}")
            self._say(f"FAILED: {exc!r}")
            self._emit(Event("failed", self.fraction, error.message, error=error))
            raise error from exc
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
        self._emit(Event("done", 1.0, "SHARP runtime ready", result=result))
        return result

    # -- steps ------------------------------------------------------------------------------------

    def _run(self) -> dict[str, Any]:
        o, layout = self.options, self.layout
        self._t0 = time.monotonic()
        layout.root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            layout.marker.unlink()  # from here until the very end, the runtime is not ready
        self._log = open(layout.log, "w", encoding="utf-8", errors="replace")  # closed by run()
        machine = o.machine or plan.detect_machine()
        choice = plan.choose_torch(machine, o.torch_requirement, o.torch_index)
        self._say(f"SHARP runtime install, {time.strftime('%Y-%m-%d %H:%M:%S')}, into {layout.root}")
        self._say(f"machine: {machine}; torch: {choice.reason}" + (f" (note: {choice.note})" if choice.note else ""))
        if not (o.sidecar_dir / "pyproject.toml").is_file():
            raise InstallError(SOURCE, f"the sidecar's source is missing from the extension ({o.sidecar_dir})")

        self._step("python", f"checking {o.base_python}")
        probe = self._capture(plan.probe_argv(o.base_python))
        try:
            version = plan.check_probe(o.base_python, *probe)
        except plan.UnsupportedPython as exc:
            raise InstallError(PYTHON, str(exc)) from None
        self._say(f"Python {'.'.join(map(str, version))}")
        wheels = o.wheels_dir
        if not o.online and wheels is None:
            requirements = sidecar_requirements(o.sidecar_dir)
            raise InstallError(OFFLINE, plan.download_instructions(choice, version, requirements, "sharp-wheels"))
        if wheels is not None and not wheels.is_dir():
            raise InstallError(OFFLINE, f"the offline wheels folder {wheels} does not exist")
        self._check_disk(choice)

        python = layout.python()
        self._step("venv", f"creating the environment {layout.venv}")
        reuse = python.is_file() and self._capture([str(python), "-c", "import pip"])[0] == 0
        if reuse:
            self._say("reusing the existing environment (repair/update)")
        else:
            self._command(plan.venv_argv(o.base_python, layout.venv, clear=layout.venv.exists()), "creating the venv")

        self._step("torch", f"installing torch ({choice.build}): {' '.join(choice.requirements)}")
        self._command(plan.torch_argv(python, choice, wheels), "installing torch")

        self._step("sidecar", "installing the SHARP sidecar")
        source = self._stage_source()
        try:
            self._command(plan.sidecar_argv(python, source, choice, wheels), "installing the sidecar")
        finally:
            shutil.rmtree(layout.build, ignore_errors=True)

        self._step("verify", "starting sharp serve")
        status = self._verify(python)
        result = {
            "python": str(python),
            "version": status.get("version"),
            "torch": status.get("torch"),
            "device": status.get("device"),
            "build": choice.build,
            "note": choice.note,
            "installed": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self._check_cancel()
        with atomic_path(layout.marker) as tmp:
            tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
        self._say(
            f"ready after {time.monotonic() - self._t0:.1f} s: sharp {result['version']}, torch {result['torch']}, device {result['device']}"
        )
        return result

    def _check_disk(self, choice: plan.TorchChoice) -> None:
        need = plan.NEEDED_BYTES[choice.build]
        try:
            free = shutil.disk_usage(self.layout.root).free
        except OSError:
            return
        if free < need:
            raise InstallError(
                DISK,
                f"no disk space: {free / 2**30:.1f} GB free at {self.layout.root}, the runtime needs about "
                f"{need / 2**30:.0f} GB. Free some space and install again",
            )

    def _stage_source(self) -> Path:
        """A private copy of the source: pip builds in the tree, and the extension's folder may be read-only."""
        sidecar = self.options.sidecar_dir
        # The extension's own folder goes along when the sidecar sits in it (its build may read shared modules).
        top = sidecar.parent if (sidecar.parent / "blender_manifest.toml").is_file() else sidecar
        target = self.layout.build / "src"
        shutil.rmtree(self.layout.build, ignore_errors=True)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".*")
        shutil.copytree(top, target, ignore=ignore)
        return target / sidecar.relative_to(top) if top != sidecar else target

    def _verify(self, python: Path) -> dict[str, Any]:
        sidecar = client.SidecarClient(client.sidecar_command(python), env=self.options.env)
        deadline = time.monotonic() + self.options.verify_timeout
        try:
            while True:  # in short waits, so that Cancel is heard while torch imports
                try:
                    status = sidecar.wait_ready(min(1.0, max(0.05, deadline - time.monotonic())))
                    break
                except client.SidecarError as exc:
                    if exc.kind != client.TIMEOUT or time.monotonic() >= deadline or self._cancel.is_set():
                        raise
        except client.SidecarError as exc:
            self._check_cancel()
            raise InstallError(
                VERIFY, f"the runtime was installed but 'sharp serve' did not start: {exc}", exc.stderr
            ) from None
        finally:
            sidecar.shutdown()
        self._say(f"sharp serve answered: {json.dumps(status)}")
        return status

    # -- plumbing ---------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
        env.update(self.options.env)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("PIP_NO_INPUT", "1")
        return env

    def _capture(self, argv: list[str]) -> tuple[int, str, str]:
        self._check_cancel()
        self._say("$ " + subprocess.list2cmdline(argv))
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=self._env(), timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            return 1, "", str(exc)
        return done.returncode, done.stdout, done.stderr

    def _command(self, argv: list[str], step: str) -> None:
        """Run one command, streaming its output to the log; InstallError (plain words) when it fails."""
        self._check_cancel()
        self._say("$ " + subprocess.list2cmdline(argv))
        lines: list[str] = []
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                env=self._env(),
                creationflags=flags,
                start_new_session=sys.platform != "win32",  # Cancel stops pip's own children too
            )
        except OSError as exc:
            raise InstallError(PYTHON, f"cannot run {argv[0]} while {step}: {exc.strerror or exc}") from None
        with self._lock:
            self._proc = proc
        if self._cancel.is_set():  # cancelled between the check above and the start
            _stop_tree(proc)
        start, span = self.fraction, self._span
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line:
                continue
            lines.append(line)
            self._say(line, event=True)
            # pip gives no total; creep towards the step's end with each line it prints.
            self._progress(start + span * (1 - 0.93 ** len(lines)), self.message)
        returncode = proc.wait()
        with self._lock:
            self._proc = None
        self._check_cancel()
        if returncode != 0:
            if step == "creating the venv":
                raise InstallError(
                    PYTHON, f"{argv[0]} could not create a venv (exit code {returncode})", "\n".join(lines[-8:])
                )
            raise explain_pip_failure(step, returncode, lines, offline=self.options.wheels_dir is not None)

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise InstallError(CANCELLED, "install cancelled; the runtime is not ready (install again to finish it)")

    def _step(self, name: str, message: str) -> None:
        done = 0.0
        for step, share in _STEPS:
            if step == name:
                self._span = share
                break
            done += share
        self._say(f"== [{time.monotonic() - self._t0:.1f} s] {message}")
        self._progress(done, message)

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message
        self._emit(Event("progress", fraction, message))

    def _say(self, line: str, event: bool = False) -> None:
        self.tail.append(line)
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()
        if event:
            self._emit(Event("log", self.fraction, line))

    def _emit(self, event: Event) -> None:
        if self.events is not None:
            self.events.put(event)
