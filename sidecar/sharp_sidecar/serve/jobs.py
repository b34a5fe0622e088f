"""What the sidecar's jobs do: the ``predict`` op, the table of job ops, and the context each op gets.

An op is a plain function ``op(ctx: JobContext) -> dict`` (the result payload). It reads
``ctx.params``, reports with ``ctx.progress(stage, fraction, message)``, calls
``ctx.check_cancelled(stage)`` between steps, and raises :class:`errors.SharpError` subclasses for
what a user can fix (their ``code`` becomes the error kind). :mod:`.server` runs the ops in
:data:`JOB_OPS` one at a time on its worker thread; adding an op means adding an entry there.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import guards
from ..errors import BadRequestError, Cancelled
from ..io import protocol

logger = logging.getLogger(__name__)

_DOWNLOAD_STEP = 0.01  # report download progress every 1 %

Send = Callable[[dict[str, Any]], None]


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
        from ..checkpoint import resolve_checkpoint
        from ..inference.pipeline import resolve_device
        from ..inference.predict import load_model

        target = resolve_device(device)
        path = resolve_checkpoint(checkpoint, progress=ctx.download_progress)
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(target))
        if self.loaded is not None and key == self._key:
            return self.loaded, False
        self.drop()  # never hold two 2.6 GB models at once
        ctx.check_cancelled("load_model")
        ctx.progress("load_model", None, f"loading {path.name} on {target}")
        self.loaded = load_model(path, str(target), progress=ctx.progress)
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

    def __init__(self, job: Job, send: Send, models: ModelCache, state: dict[str, Any]) -> None:
        self._send = send
        self._job = job
        self.id = job.id
        self.op = job.op
        self.params = job.params
        self.models = models
        self.state = state
        self._download_reported = -1.0

    def progress(self, stage: str, fraction: float | None = None, message: str = "") -> None:
        if self._job.state != "finished":
            self._send(protocol.progress(self.id, stage, fraction, message))

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
    return guards.check_path_text(name, value)


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
    from ..inference.predict import predict_file

    params = ctx.params
    image, output = _string(params, "image"), _string(params, "output")
    assert image is not None and output is not None
    focal_mm, focal_px = _focal(params, "focal_mm"), _focal(params, "focal_px")
    device = _string(params, "device", required=False) or "auto"
    if device not in ("auto", "cuda", "mps", "cpu"):
        raise BadRequestError(f"'device' must be auto, cuda, mps or cpu, got {device!r}")
    keep_model = params.get("keep_model", True) is not False
    guards.prepare_output(output, [image])  # before the checkpoint loads: a bad output costs nothing
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


def load_op(ctx: JobContext) -> dict[str, Any]:
    """``load``: the model loaded (and warmed up) before any photo, so the first ``predict`` finds it warm.

    It goes into the shared ModelCache that ``predict`` uses; the warm-up forward pays the first-call costs
    (CUDA module loading, cuDNN's plan selection, ~1.5 s on an H200). The background compile is not let go
    here: it still waits for the first photo, because a Generate clicked while it traces took 4.0 s instead
    of 0.25 s (H200, docs/performance-notes.md).
    """
    params = ctx.params
    device = params.get("device") or "auto"
    if device not in ("auto", "cuda", "mps", "cpu"):
        raise BadRequestError(f"'device' must be auto, cuda, mps or cpu, got {device!r}")
    checkpoint = params.get("checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise BadRequestError("'checkpoint' must be a path string or null")
    ctx.progress("checkpoint", None, "finding the checkpoint")
    loaded, fresh = ctx.models.get(checkpoint, device, ctx)
    if fresh and params.get("warm_up", True) is not False:
        from ..inference.fastpath import warm_up

        ctx.check_cancelled("warm_up")
        ctx.progress("warm_up", None, "first forward (CUDA kernels, cuDNN plans)")
        model, precision, _ = loaded.current()
        with loaded.exclusive():
            warm_up(model, precision)
    paths = loaded.paths
    return {
        "device": str(loaded.device),
        "precision": loaded.current()[1].name,
        "load_s": loaded.load_s,
        "loaded": fresh,
        "compile": paths.status() if paths is not None else None,
    }


def lazy_op(target: str) -> JobOp:
    """An op implemented in another module (``".module:function"``), imported on first use."""
    module_name, function_name = target.split(":")

    def op(ctx: JobContext) -> dict[str, Any]:
        try:
            module = importlib.import_module(module_name, __package__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}{module_name}":
                raise  # a dependency of that module is missing: a real error, with its traceback
            raise BadRequestError(f"{ctx.op!r} is not available in this sidecar version") from None
        return getattr(module, function_name)(ctx)  # type: ignore[no-any-return]

    return op


# The ops that queue for the worker thread, by protocol name (render lives in render_op.py).
JOB_OPS: dict[str, JobOp] = {
    protocol.PREDICT: predict_op,
    protocol.RENDER: lazy_op("..render.render_op:render_op"),
    protocol.LOAD: load_op,
}
