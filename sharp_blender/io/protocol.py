"""The sidecar protocol: newline-delimited JSON over the sidecar's stdin/stdout. Stdlib only.

This file is shared: the add-on's client imports it as ``sharp_blender.io.protocol`` and the sidecar
ships the same file as ``sharp_sidecar.io.protocol``, so both sides use one set of names.

Transport
    One JSON object per line, UTF-8, on stdin (requests) and stdout (events). Logs go to stderr and
    are never parsed. The sidecar opens no network port.

Start-up and end
    The sidecar first writes ``{"type": "ready", "id": null, "result": {...status...}}``. It exits
    (code 0) after answering ``shutdown``, or when stdin reaches EOF; either way unfinished jobs are
    cancelled first.

Requests (client -> sidecar)
    ``{"id": "7", "op": "<op>", "params": {...}}``. ``id`` is any string chosen by the client and
    unique per connection. Ops:

    ``predict``   params ``image`` (path), ``output`` (PLY path to write), optional ``focal_mm``
                  (35 mm equivalent) or ``focal_px`` (0 or null = from EXIF), ``device``
                  (auto|cuda|mps|cpu), ``checkpoint`` (path; null = SHARP_CHECKPOINT, else the
                  torch hub cache, downloaded on first use), ``plain_ply``, ``keep_model`` (default
                  true: the model stays loaded for the next request).
                  result ``ply``, ``image_size`` [W, H], ``f_px``, ``focal_source``,
                  ``num_gaussians``, ``timings`` (stage -> seconds), ``warnings``, ``device``.
                  progress stages: checkpoint, download, load_model, compile (the GPU fast path's
                  kernels, once per sidecar process), read_image, resize, encoder, decoders, composer,
                  unprojection, ply; switch (the first photo on the compiled path, once it is built
                  in the background), fallback (fp16 overflowed: the photo is computed again in bf16).
                  result also ``precision`` (the policy that computed it) and ``notes``.
                  ``sharp serve --precision fp32`` (or $SHARP_PRECISION) turns the fast path off.
    ``render``    params ``ply`` (path, or omitted for the last prediction), ``cameras`` (list of
                  ``{"viewmat": 4x4 world-to-camera OpenCV, "K": 3x3}``), ``width``, ``height``,
                  ``output`` (video path; may be omitted with ``png_dir``), optional
                  ``depth_output`` (path; omitted = ``<output stem>.depth.mp4``; false = none),
                  ``png_dir``, ``fps`` (30), ``device``,
                  ``backend`` (auto|gsplat|torch), ``batch``; without ``cameras``: ``trajectory``
                  (rotate_forward|rotate|swipe|shake) and ``frames`` (60) of the reference path.
                  result ``video``, ``depth_video``, ``png_dir`` (those written), ``frames``,
                  ``width``, ``height``, ``backend``, ``device``, ``timings``.
                  progress stages: load, compile (gsplat's first use), render (per frame), encode.
    ``load``      params ``device``, ``checkpoint`` (as for ``predict``), ``warm_up`` (default true: one
                  forward on a blank image, so the first photo pays no first-call costs). Loads the
                  model (if not loaded already) for the next ``predict``: the add-on sends it when
                  its panel is first drawn, so the first Generate finds the model warm.
                  result ``device``, ``precision``, ``load_s``, ``loaded`` (false: it was already),
                  ``compile`` (the background compile's state, or null).
                  progress stages: checkpoint, download, load_model, compile, warm_up.
    ``status``    result ``version``, ``protocol``, ``torch``, ``device``, ``cuda``, ``model_loaded``,
                  ``checkpoint``, ``busy``, ``queued``, ``ops``, ``pid``.
    ``cancel``    params ``target`` (the id to cancel); result ``cancelled`` (bool: false when the
                  target is unknown or already over).
    ``shutdown``  result ``{}``; the sidecar then exits.

Events (sidecar -> client), each carrying the request's ``id``
    ``{"type": "progress", "id", "stage", "fraction" (0..1 or null), "message"}``  any number
    ``{"type": "result", "id", "result": {...}}``                                 ends the request
    ``{"type": "error", "id", "error": {"kind", "message", "traceback"}}``       ends the request

Error kinds besides the obvious ones: ``output`` (the output cannot be written there: read-only, full, a
folder, the input photo itself; checked before the model runs) and ``non_finite`` (the model produced
NaN or infinite values, e.g. from a damaged checkpoint; no PLY is written).

Every request ends with exactly one ``result`` or ``error``. A line that is not a valid request gets
an ``error`` of kind ``bad_request`` (``id`` null when none could be read), as does an id that is
still in use. ``predict`` and ``render`` run one at a time in order; ``status`` and ``cancel`` are
answered at once, even while a job runs. A cancelled job ends with an error of kind ``cancelled``;
cancellation is checked between stages (and between chunks of a checkpoint download).
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1

# Ops
PREDICT = "predict"
RENDER = "render"
LOAD = "load"
STATUS = "status"
CANCEL = "cancel"
SHUTDOWN = "shutdown"
OPS = (PREDICT, RENDER, LOAD, STATUS, CANCEL, SHUTDOWN)
# Ops that queue behind each other; the others are answered immediately.
JOB_OPS = (PREDICT, RENDER, LOAD)

# Event types
READY = "ready"
PROGRESS = "progress"
RESULT = "result"
ERROR = "error"
EVENT_TYPES = (READY, PROGRESS, RESULT, ERROR)

# Error kinds: stable codes a client may branch on. The message is for people.
BAD_REQUEST = "bad_request"
BAD_IMAGE = "bad_image"
BAD_PLY = "bad_ply"
CHECKPOINT = "checkpoint"
OUT_OF_MEMORY = "out_of_memory"
DEVICE = "device"
CANCELLED = "cancelled"
INTERNAL = "internal"
SIDECAR_DIED = "sidecar_died"  # raised by the client when the process goes away mid-request
OUTPUT = "output"  # the output location cannot take the file (read-only, full, an input, a folder, ...)
NON_FINITE = "non_finite"  # the model produced NaN or infinite values (a damaged checkpoint); nothing written


class ProtocolError(ValueError):
    """A line that is not a valid message."""


def encode(message: dict[str, Any]) -> str:
    """One message -> one line (with the trailing newline)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False) + "\n"


def decode(line: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}: {line[:200]!r}") from exc
    except RecursionError:  # e.g. a line of 5,000 nested brackets: refused, never fatal
        raise ProtocolError(f"JSON nested too deeply to read: {line[:80]!r}...") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"expected a JSON object, got {type(message).__name__}")
    return message


def request(request_id: str, op: str, **params: Any) -> dict[str, Any]:
    return {"id": request_id, "op": op, "params": params}


def parse_request(message: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Validate a request; returns (id, op, params)."""
    request_id = message.get("id")
    op = message.get("op")
    params = message.get("params", {})
    if not isinstance(request_id, str) or not request_id:
        raise ProtocolError("a request needs a non-empty string 'id'")
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")
    if not isinstance(params, dict):
        raise ProtocolError("'params' must be a JSON object")
    return request_id, op, params


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return {"type": READY, "id": None, "result": status}


def progress(request_id: str, stage: str, fraction: float | None = None, message: str = "") -> dict[str, Any]:
    return {"type": PROGRESS, "id": request_id, "stage": stage, "fraction": fraction, "message": message}


def result(request_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": RESULT, "id": request_id, "result": payload}


def error(request_id: str | None, kind: str, message: str, traceback: str | None = None) -> dict[str, Any]:
    return {"type": ERROR, "id": request_id, "error": {"kind": kind, "message": message, "traceback": traceback}}
