"""``load``: load the model before any photo, so the first ``predict`` finds it warm (the add-on's pre-start).

The model goes into the server's shared ModelCache, the one ``predict`` uses; with ``warm_up`` one forward on a
fixed image then pays the first-call costs (CUDA module loading, cuDNN's plan selection, ~1.5 s on an H200).
The background compile (warm_start) is not let go here: it still waits for the first photo or its delay,
because a Generate clicked while it traces took 4.0 s instead of 0.25 s (H200, docs/performance-notes.md).
"""

from __future__ import annotations

from typing import Any

from .errors import BadRequestError
from .jobs import JobContext


def load_op(ctx: JobContext) -> dict[str, Any]:
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
        from .fastpath import warm_up

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
