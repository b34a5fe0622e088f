"""MP4 and PNG writers: frame counts, odd sizes, atomic output."""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from sharp_sidecar.render import video


def frames(count: int, width: int, height: int) -> list[np.ndarray]:
    out = []
    for i in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, : width // 2] = (40 + 20 * i, 120, 200)
        frame[:, width // 2 :] = (220, 60, 20)
        out.append(frame)
    return out


def decode(path: Path) -> tuple[tuple[int, int], list[np.ndarray]]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    return (width, height), [np.frombuffer(b, np.uint8).reshape(height, width, 3) for b in reader]


def test_mp4_round_trip(tmp_path: Path) -> None:
    writer = video.Mp4Writer(tmp_path / "v.mp4", fps=30)
    for frame in frames(7, 64, 48):
        writer.write(frame)
    assert not (tmp_path / "v.mp4").exists()  # only the temporary file exists while encoding
    writer.close()
    size, decoded = decode(tmp_path / "v.mp4")
    assert size == (64, 48) and len(decoded) == 7
    # Lossy, but the flat halves survive: the left half brightens frame by frame.
    assert abs(int(decoded[6][24, 10, 0]) - 160) < 8 and abs(int(decoded[0][24, 50, 0]) - 220) < 8
    assert video.read_video_info(tmp_path / "v.mp4") == {"frames": 7, "size": (64, 48), "fps": 30.0}
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_odd_sizes_are_padded_not_rescaled(tmp_path: Path) -> None:
    writer = video.Mp4Writer(tmp_path / "odd.mp4")
    for frame in frames(3, 33, 21):
        writer.write(frame)
    writer.close()
    size, decoded = decode(tmp_path / "odd.mp4")
    assert size == (34, 22) and len(decoded) == 3
    padded = video.pad_to_even(frames(1, 33, 21)[0])
    assert padded.shape == (22, 34, 3)
    np.testing.assert_array_equal(padded[:, 33], padded[:, 32])
    np.testing.assert_array_equal(padded[21], padded[20])


def test_size_change_is_refused_and_abort_leaves_nothing(tmp_path: Path) -> None:
    writer = video.Mp4Writer(tmp_path / "x.mp4")
    writer.write(frames(1, 32, 32)[0])
    with pytest.raises(ValueError, match="is 16x16, the video is 32x32"):
        writer.write(frames(1, 16, 16)[0])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_threaded_sinks_and_pngs(tmp_path: Path) -> None:
    mp4 = video.ThreadedSink(video.Mp4Writer(tmp_path / "t.mp4"))
    png = video.ThreadedSink(video.PngSequenceWriter(tmp_path / "png", prefix="f"))
    for frame in frames(4, 32, 16):
        mp4.write(frame)
        png.write(frame)
    mp4.close()
    png.close()
    assert video.read_video_info(tmp_path / "t.mp4")["frames"] == 4
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["f0001.png", "f0002.png", "f0003.png", "f0004.png"]


def test_threaded_sink_reports_the_writer_error(tmp_path: Path) -> None:
    sink = video.ThreadedSink(video.Mp4Writer(tmp_path / "e.mp4"))
    sink.write(frames(1, 32, 32)[0])
    sink.write(frames(1, 16, 16)[0])
    with pytest.raises(ValueError, match="the video is 32x32"):
        sink.close()
    sink.sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_closing_an_empty_writer_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no frame"):
        video.Mp4Writer(tmp_path / "n.mp4").close()
