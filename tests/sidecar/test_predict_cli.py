"""`sharp predict` end to end with a tiny-preset checkpoint (fast), plus its file discovery and naming."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sharp_sidecar.cli.main import main
from sharp_sidecar.inference.predict import find_images, output_paths
from sharp_sidecar.io import ply
from sharp_sidecar.model import get_config

TINY_N = get_config("tiny").num_gaussians


@pytest.fixture
def photo_tree(tmp_path: Path, reference_images: dict[str, Path]) -> Path:
    """in/one/a.jpg (600x400, EXIF 26 mm), in/two/a.jpg + in/two/A.PNG (640x480, no EXIF), in/broken.png."""
    root = tmp_path / "in"
    (root / "one").mkdir(parents=True)
    (root / "two").mkdir()
    shutil.copy(reference_images["photo_exif"], root / "one" / "a.jpg")
    with Image.open(reference_images["synth_640x480"]) as im:
        im.convert("RGB").save(root / "two" / "a.jpg", quality=90)
    shutil.copy(reference_images["synth_640x480"], root / "two" / "A.PNG")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (root / "notes.txt").write_text("not a photo")
    return root


def test_directory_end_to_end(
    photo_tree: Path, tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["predict", "-i", str(photo_tree), "-o", str(out), "-c", str(tiny_checkpoint), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1, captured  # the broken photo fails the run ...
    assert "broken.png" in captured.err and "3 of 4 written" in captured.out
    assert captured.out.count("model: tiny preset") == 1  # loaded once for all photos
    # ... but the others are written, mirroring the folders; equal stems in one folder keep their suffix.
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.ply"))
    assert written == ["one/a.ply", "two/A.PNG.ply", "two/a.jpg.ply"]
    assert not list(out.rglob("*.partial*"))

    splats = ply.read_gaussians(out / "one" / "a.ply")
    assert splats.count == TINY_N
    assert splats.camera is not None and splats.camera.image_size == (600, 400)
    f_px = 26 * math.hypot(600, 400) / math.hypot(36, 24)
    np.testing.assert_allclose(splats.camera.K, [[f_px, 0, 300], [0, f_px, 200], [0, 0, 1]], rtol=1e-6)
    assert splats.color_space == ply.COLOR_SPACE_SRGB
    assert np.isfinite(splats.means).all() and (splats.means[:, 2] > 0).all()

    other = ply.read_gaussians(out / "two" / "A.PNG.ply")
    assert other.camera is not None and other.camera.image_size == (640, 480)
    assert other.camera.K[0, 0] == pytest.approx(30 * math.hypot(640, 480) / math.hypot(36, 24), rel=1e-6)


def test_single_file_plain_ply_and_focal_override(
    reference_images: dict[str, Path], tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["predict", "-i", str(reference_images["photo_exif"]), "-o", str(out), "-c", str(tiny_checkpoint)]
    assert main([*args, "--device", "cpu", "--plain-ply", "--focal-px", "700"]) == 0
    contents = ply.read_ply(out / "photo_exif.ply")
    assert list(contents.elements) == ["vertex"] and len(contents.vertex) == TINY_N
    assert list(contents.vertex.dtype.names or ()) == list(ply.SHARP_VERTEX_PROPERTIES)
    assert "f = 700.0 px (focal_px)" in capsys.readouterr().out

    assert main([*args, "--device", "cpu", "--focal-mm", "50"]) == 0
    camera = ply.read_gaussians(out / "photo_exif.ply").camera
    assert camera is not None
    assert camera.K[0, 0] == pytest.approx(50 * math.hypot(600, 400) / math.hypot(36, 24), rel=1e-6)


def test_missing_checkpoint_and_empty_folder(
    tmp_path: Path, reference_images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(reference_images["photo_exif"])
    assert main(["predict", "-i", image, "-o", str(tmp_path), "-c", str(tmp_path / "none.pt")]) == 1
    assert "none.pt" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "-i", str(empty), "-o", str(tmp_path / "o"), "-c", "x.pt"]) == 2
    assert "no images found" in capsys.readouterr().err
    assert main(["predict", "-i", str(tmp_path / "nothing"), "-o", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_wrong_checkpoint_file(
    tmp_path: Path, reference_images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong.pt"
    torch.save({"some.weight": torch.zeros(3)}, wrong)
    image = str(reference_images["photo_exif"])
    assert main(["predict", "-i", image, "-o", str(tmp_path / "o"), "-c", str(wrong), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "not a SHARP checkpoint" in err and "wrong.pt" in err


def test_find_images_is_recursive_and_case_insensitive(tmp_path: Path) -> None:
    for name in ("a.JPG", "b.jpeg", "sub/c.Png", "sub/deeper/d.heic", "sub/e.TIF", "x.txt", ".hidden/f.jpg", "g.ply"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.JPG", "b.jpeg", "sub/c.Png", "sub/deeper/d.heic", "sub/e.TIF"]


def test_output_paths_never_collide(tmp_path: Path) -> None:
    root = tmp_path / "in"
    inputs = [root / "x.jpg", root / "s" / "x.jpg", root / "s" / "x.PNG", root / "s" / "y.png"]
    outs = output_paths(inputs, root, tmp_path / "o")
    rel = [p.relative_to(tmp_path / "o").as_posix() for p in outs]
    assert rel == ["x.ply", "s/x.jpg.ply", "s/x.PNG.ply", "s/y.ply"]
    assert len(set(rel)) == len(rel)
