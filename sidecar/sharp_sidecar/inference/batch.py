"""Many photos in one pass: decode ahead and write PLYs behind, so the GPU never waits for the disk.

Three stages run at once: a decoder thread reads the next photos (Pillow releases the GIL while decoding), the
calling thread runs the network and copies each result's vertex table into page-locked host memory, and a writer
thread writes the PLY files. Results come back in input order, each with its own error if it failed; a bad photo
does not stop the batch.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import guards
from ..gaussians import disparity_quantiles, vertex_columns
from ..image import imageio
from ..io import ply
from .overflow_guard import predict_guarded
from .precision import DEFAULT
from .results import FileResult, expected_gaussians

logger = logging.getLogger(__name__)


@dataclass
class BatchItem:
    """One photo's outcome: ``result`` (a predict.FileResult) or ``error``."""

    image: Path
    output: Path
    result: Any = None
    error: Exception | None = None


def _write(path: Path, vertex: Any, extra: list[tuple[str, Any]]) -> float:
    start = time.perf_counter()
    with guards.writing(path):
        ply.write_ply(path, vertex, extra)
    return time.perf_counter() - start


def predict_many(
    loaded: Any,
    jobs: Sequence[tuple[Path, Path]],
    *,
    focal_mm: float | None = None,
    focal_px: float | None = None,
    plain: bool = False,
    prefetch: int = 2,
    keep_gaussians: bool = False,
) -> Iterator[BatchItem]:
    """Predict every (photo, PLY path) pair with decoding and writing overlapped; yields in input order.

    Args:
        loaded: a predict.LoadedModel.
        jobs: (photo, output PLY) pairs.
        focal_mm, focal_px, plain: as predict.predict_file.
        prefetch: photos decoded ahead of the network.
        keep_gaussians: keep each result's metric Gaussians on the device (off: they are freed after writing).
    """

    def current() -> tuple[Any, Any, str | None]:
        if hasattr(loaded, "current"):
            return loaded.current()  # type: ignore[no-any-return]
        return loaded.model, loaded.precision or DEFAULT, None  # a bare (model, precision) holder (sharp bench)

    device = next(loaded.model.parameters()).device
    size = guards.expected_ply_bytes(expected_gaussians(loaded))
    with (
        ThreadPoolExecutor(1, thread_name_prefix="sharp-decode") as decoder,
        ThreadPoolExecutor(1, thread_name_prefix="sharp-write") as writer,
    ):

        def decode(path: Path) -> tuple[Any, float]:
            start = time.perf_counter()
            decode_on = current()[1].decode_device(device)  # nvJPEG once the background start has warmed it
            photo = imageio.load_rgb(path, focal_mm=focal_mm, focal_px=focal_px, device=decode_on)
            return photo, time.perf_counter() - start

        decoded: collections.deque[Future[tuple[Any, float]]] = collections.deque(
            decoder.submit(decode, image) for image, _ in jobs[: prefetch + 1]
        )
        pending: collections.deque[tuple[BatchItem, Future[float] | None]] = collections.deque()
        for index, (image, output) in enumerate(jobs):
            item = BatchItem(image, output)
            write: Future[float] | None = None
            future = decoded.popleft()
            if index + prefetch + 1 < len(jobs):
                decoded.append(decoder.submit(decode, jobs[index + prefetch + 1][0]))
            try:
                guards.prepare_output(output, [image], size)  # before the network runs
                photo, read_s = future.result()
                model, precision, note = current()  # the compiled path as soon as it is ready
                with loaded.exclusive() if hasattr(loaded, "exclusive") else contextlib.nullcontext():
                    prediction = predict_guarded(
                        model, photo.rgb, photo.f_px, precision=precision, eager_model=loaded.model
                    )
                g = prediction.gaussians
                guards.check_finite(g, image)
                vertex = vertex_columns(g)  # GPU math + one copy to pinned memory, before the next photo's kernels
                extra = (
                    []
                    if plain
                    else ply.sharp_metadata(
                        photo.f_px, prediction.image_size, len(vertex), [float(v) for v in disparity_quantiles(g)]
                    )
                )
                write = writer.submit(_write, output, vertex, extra)
                if hasattr(loaded, "photo_done"):
                    loaded.photo_done()
                item.result = FileResult(
                    ply=output,
                    image_size=(photo.width, photo.height),
                    f_px=photo.f_px,
                    focal_source=photo.focal_source,
                    num_gaussians=g.num_gaussians,
                    timings={"read_image": read_s, **prediction.timings},
                    warnings=[*photo.warnings, *prediction.notes],
                    gaussians=g if keep_gaussians else None,
                    precision=prediction.precision,
                    notes=[*([note] if note else []), *prediction.notes],
                )
            except Exception as exc:  # reported per photo; the batch goes on
                item.error = exc
            pending.append((item, write))
            while pending and (pending[0][1] is None or pending[0][1].done() or len(pending) > 2):
                yield _finish(*pending.popleft())
        while pending:
            yield _finish(*pending.popleft())


def _finish(item: BatchItem, write: Future[float] | None) -> BatchItem:
    if write is not None:
        try:
            item.result.timings["ply"] = write.result()
        except Exception as exc:
            item.result, item.error = None, exc
    return item
