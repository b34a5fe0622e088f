"""No compile wait on the critical path: photos run eagerly while the compiled kernels are built beside them.

:class:`PathSwitch` holds the loaded (eager) model and builds a compiled twin in a background thread: a copy
of the module tree that shares every parameter (no second copy of the weights), compiled and warmed up on
a fixed input. Until the twin is ready, :meth:`PathSwitch.current` hands out the eager model with the
policy's eager twin (same dtype, fused kernels and layout, no torch.compile, no cuDNN benchmark), so the first
photo needs neither a compile nor cuDNN's algorithm search; from then on it hands out the compiled twin, once
with a note ("switch" progress stage). Both paths compute the same function in the same dtype, so results
differ only within the precision's own tolerance (tests/sidecar/test_warm_start.py).

The build waits until the first photo is done (:meth:`PathSwitch.kick`) or ``delay`` seconds have passed, so
the first photo does not share the CPU with the compiler (it took 3-4 s instead of 1.3 s when it did). The
thread starts nvJPEG first (gpu_jpeg.warm_up: torchvision's import and the decoder's start cost seconds);
until then photos are decoded by Pillow.

One thing in the compile is not thread-local: torch.fx's tracer (AOTAutograd's make_fx, once per graph) patches
``nn.Module.__call__`` for the whole process while it traces, so an eager forward running at that moment in
another thread is recorded into the trace and fails. :func:`guard_fx_tracing` puts a lock around each such
trace and :meth:`PathSwitch.exclusive` holds it for an eager photo: the two take turns (a trace takes well
under a second; a photo ~0.2 s).

What the compile produced is kept in a :class:`compile_store.CompileStore` entry keyed by torch, GPU, policy
and shapes; a failed compile is recorded there so that the next start does not try again on that setup.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch.fx._symbolic_trace as fx_trace
from torch import nn

from ..image import gpu_jpeg
from . import compile_store, fastpath, precompiled
from .precision import Precision, apply_flags, eager_twin

logger = logging.getLogger(__name__)

Builder = Callable[[nn.Module, Precision], nn.Module]
Progress = Callable[[str, "float | None", str], None]


TRACE_LOCK = threading.RLock()
PRECOMPILE_ENV = "SHARP_PRECOMPILE"  # 0: torch.compile with its caches only (traced again by every process)


def guard_fx_tracing() -> None:
    """Make every torch.fx trace hold :data:`TRACE_LOCK` while its process-wide patches are in place (idempotent)."""
    original = fx_trace._new_patcher
    if getattr(original, "_sharp_locked", False):
        return

    @functools.wraps(original)
    @contextlib.contextmanager
    def locked_patcher() -> Iterator[Any]:
        with TRACE_LOCK, original() as patcher:
            yield patcher

    locked_patcher._sharp_locked = True  # type: ignore[attr-defined]
    fx_trace._new_patcher = locked_patcher


def share_weights_copy(model: nn.Module) -> nn.Module:
    """A deep copy of the module tree whose parameters and buffers are the original's own tensors."""
    memo: dict[int, Any] = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def build_compiled(model: nn.Module, precision: Precision) -> nn.Module:
    """The compiled twin of ``model``: compiled in place on the copy and warmed up (the compile happens here)."""
    twin = share_weights_copy(model)
    graphs = precision.cuda_graphs
    fastpath.compile_model(twin, "reduce-overhead" if graphs else None)  # type: ignore[arg-type]
    fastpath.warm_up(twin, precision, runs=3 if graphs else 1)  # type: ignore[arg-type]
    return twin


def _is_transient(exc: BaseException) -> bool:
    """Errors that say nothing about this machine's ability to compile (do not record them as a failure):
    running out of memory beside the photos, or the process ending under the compile (its worker pool closed)."""
    text = str(exc).lower()
    exiting = not threading.main_thread().is_alive() or "closed pool" in text or "shutdown" in text
    return exiting or "out of memory" in text or isinstance(exc, KeyboardInterrupt)


class PathSwitch:
    """The eager path now, the compiled path once its background build has finished (see the module docstring).

    Args:
        model: the loaded model (stays the eager path; never compiled itself).
        precision: the compiled policy to switch to.
        store: where compile outcomes are kept (default: under fastpath.cache_dir()).
        builder: makes the compiled twin (default :func:`build_compiled`; tests pass a stand-in).
        device: for the key's GPU name and architecture (default: the model's).
        delay: seconds the build waits for :meth:`kick` (the first photo done) before it starts anyway.
    """

    def __init__(
        self,
        model: nn.Module,
        precision: Precision,
        *,
        store: compile_store.CompileStore | None = None,
        builder: Builder | None = None,
        device: Any = None,
        delay: float = 0.0,
    ) -> None:
        self.eager_model = model
        self.compiled_precision = precision
        self.eager_precision = eager_twin(precision)
        self.store = store if store is not None else compile_store.CompileStore(fastpath.cache_dir() / "store")
        self.builder = builder or build_compiled
        # Saved whole (inference.precompiled) where torch can, so a later start loads instead of tracing.
        self.precompile = (
            builder is None
            and not precision.cuda_graphs
            and precompiled.supported()
            and os.environ.get(PRECOMPILE_ENV) != "0"
        )
        self.report: dict[str, Any] = {}
        config = getattr(model, "config", None)
        self.device = device if device is not None else next(model.parameters()).device
        self.key = compile_key_for(precision, config, self.device)
        self.state = "eager"  # eager -> compiling -> ready | failed
        self.error = ""
        self.seconds: float | None = None
        self.expected_s: float | None = None  # the last build's duration, for progress
        self.started_at: float | None = None
        self.loaded_artifacts = False
        self._compiled: nn.Module | None = None
        self._announced = False
        self.delay = delay
        self._go = threading.Event()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, progress: Progress | None = None) -> None:
        """Begin the background build (returns at once); a recorded failure on this key skips it."""
        entry = self.store.read(self.key)
        if entry is not None and entry.status == "failed":
            self._fail(f"compiling failed before with this torch and GPU ({entry.error}); running without it")
            if progress is not None:
                progress("compile", None, self.error)
            if self.compiled_precision.gpu_jpeg and self.device.type == "cuda":  # the decoder still helps
                threading.Thread(target=gpu_jpeg.warm_up, args=(self.device,), daemon=True).start()
            return
        self.expected_s = entry.seconds if entry is not None else None
        fastpath.use_compile_cache()  # before any compile, in this (the main) thread
        guard_fx_tracing()
        if self.device.type == "cuda":
            apply_flags(self.compiled_precision)  # one set of TF32/cuDNN flags for both threads
        self.state, self.started_at = "compiling", time.perf_counter()
        if progress is not None:
            known = f" (about {self.expected_s:.0f} s last time)" if self.expected_s else ""
            progress(
                "compile",
                None,
                f"compiling the {self.compiled_precision.name} kernels in the background{known}; "
                f"photos run on the {self.eager_precision.name} path until they are ready",
            )
        self._thread = threading.Thread(target=self._build, args=(entry,), name="sharp-compile", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Let the build start now (called when a photo is done, or when the model has been warmed up)."""
        self._go.set()

    def _build(self, entry: compile_store.Entry | None) -> None:
        self._go.wait(self.delay)
        start = time.perf_counter()
        twin: nn.Module
        try:
            if self.compiled_precision.gpu_jpeg and self.device.type == "cuda":
                gpu_jpeg.warm_up(self.device)
            if self.precompile:
                twin, self.report = precompiled.build_precompiled(
                    share_weights_copy(self.eager_model),  # type: ignore[arg-type]
                    self.compiled_precision,
                    self.store,
                    self.key,
                )
            else:
                if entry is not None:
                    self.loaded_artifacts = compile_store.load_artifacts(self.store, self.key, entry)
                twin = self.builder(self.eager_model, self.compiled_precision)
        except BaseException as exc:  # Inductor needs Triton and a C compiler; the eager path goes on regardless
            message = f"{type(exc).__name__}: {exc}"
            logger.warning("background compile failed (%s); photos stay on the eager path", message)
            if not _is_transient(exc):
                self.store.write(self.key, b"", time.perf_counter() - start, status="failed", error=message)
            self._fail(message)
            return
        seconds = time.perf_counter() - start
        if self.precompile:  # the units are stored one by one; this entry keeps the time, for progress
            self.store.write(self.key, b"", seconds)
        else:
            compile_store.save_artifacts(self.store, self.key, seconds)
        with self._lock:
            self._compiled, self.seconds, self.state = twin, seconds, "ready"
        logger.info("compiled %s path ready after %.1f s", self.compiled_precision.name, seconds)
        self._done.set()

    def _fail(self, message: str) -> None:
        with self._lock:
            self.state, self.error = "failed", message
        self._done.set()

    def current(self) -> tuple[nn.Module, Precision, str | None]:
        """(model, policy, note) for the next photo; the note is set once, on the first compiled photo."""
        with self._lock:
            if self.state != "ready" or self._compiled is None:
                return self.eager_model, self.eager_precision, None
            note = None
            if not self._announced:
                self._announced = True
                note = (
                    f"compiled {self.compiled_precision.name} kernels ready (built in {self.seconds:.1f} s): "
                    "switched to the compiled path"
                )
            return self._compiled, self.compiled_precision, note

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold while a photo runs: no torch.fx trace patches nn.Module meanwhile (a no-op once compiled)."""
        if self.state != "compiling":
            yield
            return
        with TRACE_LOCK:
            yield

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the build ends (or ``timeout`` s); True if the compiled path is ready."""
        self._done.wait(timeout)
        return self.state == "ready"

    def status(self) -> dict[str, Any]:
        elapsed = None if self.started_at is None else time.perf_counter() - self.started_at
        return {
            "state": self.state,
            "path": "compiled" if self.state == "ready" else "eager",
            "precision": self.compiled_precision.name,
            "seconds": self.seconds,
            "elapsed": elapsed,
            "expected": self.expected_s,
            "error": self.error,
            "units": self.report,
        }


def compile_key_for(precision: Precision, config: Any, device: Any) -> dict[str, str]:
    """The compile store's key for this policy, model configuration and device, and the code that compiles
    (so a failure recorded by one version of the sidecar does not stop a later one from trying)."""
    key = compile_store.compile_key(
        precision.name,
        str(getattr(config, "name", "?")),
        int(getattr(config, "resolution", 0)),
        "reduce-overhead" if precision.cuda_graphs else None,
        compile_store.device_info(device),
    )
    return {**key, "code": precompiled.code_hash()}
