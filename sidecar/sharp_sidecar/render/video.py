"""Frame sinks: H.264 MP4 through imageio-ffmpeg (which bundles ffmpeg), PNG sequences, a writer thread.

Every output appears under its final name only when it is complete (``atomic_path``): an MP4 is
encoded into a temporary file beside the target and renamed when ffmpeg has finished; a PNG is
written the same way, frame by frame. An aborted render leaves nothing behind.

yuv420p needs even dimensions; frames of odd width or height are padded by repeating the last
column / row (no resampling, unlike imageio's default macro-block rescale).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..io.atomic import atomic_path

logger = logging.getLogger(__name__)

DEFAULT_FPS = 30
DEFAULT_QUALITY = 5.0  # imageio's default: libx264 -crf 25
DEFAULT_PRESET = "veryfast"  # previews: encoding speed over file size


class FrameSink(Protocol):
    def write(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> the same with H and W rounded up to even by edge replication."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if not (pad_h or pad_w):
        return frame
    return np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


class Mp4Writer:
    """An H.264 (libx264, yuv420p) MP4, opened on the first frame (whose size fixes the video's).

    Args:
        path: the final ``.mp4`` path.
        fps: frames per second.
        quality: imageio-ffmpeg's 1–10 quality scale (maps to x264's CRF).
        preset: x264 speed preset.
    """

    def __init__(
        self, path: str | Path, fps: float = DEFAULT_FPS, quality: float = DEFAULT_QUALITY, preset: str = DEFAULT_PRESET
    ) -> None:
        self.path = Path(path)
        self.fps = fps
        self.quality = quality
        self.preset = preset
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self._stack = contextlib.ExitStack()
        self._gen: Generator[None, Any, None] | None = None

    def _open(self, width: int, height: int) -> None:
        import imageio_ffmpeg

        tmp = self._stack.enter_context(atomic_path(self.path))
        self._gen = imageio_ffmpeg.write_frames(
            str(tmp),
            (width, height),
            fps=float(self.fps),
            codec="libx264",
            pix_fmt_out="yuv420p",
            quality=self.quality,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=["-preset", self.preset, "-movflags", "+faststart"],
        )
        self._gen.send(None)
        self.size = (width, height)

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        frame = pad_to_even(np.ascontiguousarray(frame, dtype=np.uint8))
        height, width = frame.shape[:2]
        if self._gen is None:
            self._open(width, height)
        elif self.size != (width, height):
            raise ValueError(f"frame {self.frames} is {width}x{height}, the video is {self.size[0]}x{self.size[1]}")  # type: ignore[index]
        assert self._gen is not None
        self._gen.send(frame)
        self.frames += 1

    def close(self) -> None:
        """Finish encoding and move the file to its final name."""
        if self._gen is None:
            raise ValueError(f"no frame was written to {self.path}")
        self._gen.close()  # waits for ffmpeg; raises if it failed
        self._gen = None
        self._stack.close()

    def abort(self) -> None:
        """Stop ffmpeg and delete the partial file."""
        gen, self._gen = self._gen, None
        with contextlib.suppress(Exception):
            if gen is not None:
                gen.close()
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


class PngSequenceWriter:
    """``<folder>/<prefix>0001.png`` … (numbered from 1), each written atomically with Pillow."""

    def __init__(self, folder: str | Path, prefix: str = "frame_") -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.frames = 0
        self.written: list[Path] = []

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image

        self.frames += 1
        target = self.folder / f"{self.prefix}{self.frames:04d}.png"
        with atomic_path(target) as tmp:
            Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(tmp, format="PNG", compress_level=1)
        self.written.append(target)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        for path in self.written:
            with contextlib.suppress(OSError):
                path.unlink()


_STOP = object()


class ThreadedSink:
    """Runs a sink on its own thread so that encoding overlaps rendering (and other sinks).

    ``write`` queues the frame (blocking when ``depth`` frames wait); an error on the thread is raised
    by the next ``write`` or by ``close``.
    """

    def __init__(self, sink: FrameSink, depth: int = 16) -> None:
        self.sink = sink
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"sink-{type(sink).__name__}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is None:
                try:
                    self.sink.write(item)
                except BaseException as exc:  # re-raised on the caller's thread
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, frame: np.ndarray) -> None:
        self._raise()
        self._queue.put(frame)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        self._raise()
        self.sink.close()

    def abort(self) -> None:
        self._error = self._error or RuntimeError("aborted")
        self._queue.put(_STOP)
        self._thread.join()
        self.sink.abort()


def read_video_info(path: str | Path) -> dict[str, Any]:
    """Frame count and size of a video, read by decoding it (for tests and reports).

    Returns:
        ``{"frames": int, "size": (W, H), "fps": float}``.
    """
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    frames = sum(1 for _ in reader)
    return {"frames": frames, "size": tuple(meta["size"]), "fps": float(meta["fps"])}
