"""`sharp render`: PLY or folder in, videos (and PNGs) out; argument errors; no torch for --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sharp_sidecar.cli import main as cli
from sharp_sidecar.render.video import read_video_info

from tests.pixel_splats import write_pixel_ply


@pytest.fixture(scope="module")
def ply_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plys")
    v, u = np.mgrid[0:30, 0:40]
    image = np.stack([u * 6, v * 8, (u + v) * 3], -1).astype(np.uint8)
    write_pixel_ply(folder / "a.ply", image, focal=36.0)
    write_pixel_ply(folder / "b.ply", image[::-1].copy(), focal=36.0, seed=1)
    (folder / "notes.txt").write_text("not a ply")
    (folder / "sub").mkdir()
    write_pixel_ply(folder / "sub" / "deeper.ply", image, focal=36.0)  # not recursive: skipped
    return folder


def test_folder_renders_every_ply_inside(tmp_path: Path, ply_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["render", "-i", str(ply_folder), "-o", str(tmp_path), "--frames", "3", "--trajectory", "swipe"])
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.depth.mp4", "a.mp4", "b.depth.mp4", "b.mp4"]
    info = read_video_info(tmp_path / "b.mp4")
    assert info["frames"] == 3 and info["size"] == (40, 30) and info["fps"] == 30
    assert "3 frames 40x30 (torch on cpu)" in capsys.readouterr().out


def test_single_ply_with_resolution_pngs_and_no_depth(tmp_path: Path, ply_folder: Path) -> None:
    args = ["render", "-i", str(ply_folder / "a.ply"), "-o", str(tmp_path), "--frames", "2", "--resolution", "33x21"]
    assert cli.main([*args, "--png", "--no-depth", "--fps", "12"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "a_frames"]
    assert sorted(p.name for p in (tmp_path / "a_frames").iterdir()) == ["frame_0001.png", "frame_0002.png"]
    info = read_video_info(tmp_path / "a.mp4")
    assert info["size"] == (34, 22) and info["fps"] == 12  # odd sizes are padded to even for yuv420p


def test_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "-i", str(tmp_path / "missing.ply"), "-o", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["render", "-i", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    assert "no .ply file" in capsys.readouterr().err
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nend_header\n")
    assert cli.main(["render", "-i", str(tmp_path / "bad.ply"), "-o", str(tmp_path / "out")]) == 1
    assert "binary PLY" in capsys.readouterr().err
    for bad in (["--frames", "0"], ["--resolution", "1920by1080"], ["--trajectory", "zoom"]):
        with pytest.raises(SystemExit):
            cli.main(["render", "-i", "x.ply", "-o", "y", *bad])


def test_help_does_not_import_torch() -> None:
    code = "import sys; sys.modules['torch'] = None\nfrom sharp_sidecar.cli import main as cli\ncli.main(['render', '--help'])"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0 and "--trajectory" in run.stdout
