"""Photos: unreadable files end in BadImageError naming the file; implausible EXIF focal lengths fall back with a
warning naming the tag; a bad photo leaves no PLY and the next photo still works."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin
from sharp_sidecar.errors import BadImageError, BadRequestError
from sharp_sidecar.image import imageio

from tests.faults.helpers import leftovers, make_photo

FOCAL_35 = 0xA405
FOCAL = 0x920A


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 20, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


BAD_FILES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "empty": ("x.jpg", _write(b""), "not an image"),
    "text": ("x.jpg", _write(b"hello, not a picture\n" * 10), "not an image"),
    "html": ("x.png", _write(b"<!DOCTYPE html><html>portal</html>"), "not an image"),
    "truncated-jpeg": ("x.jpg", _write(_jpeg_bytes()[:200]), "cannot decode"),
    "truncated-png": ("x.png", lambda p: (make_photo(p), p.write_bytes(p.read_bytes()[:100])), "cannot decode"),
    "png-magic-only": ("x.png", _write(b"\x89PNG\r\n\x1a\n"), "cannot decode|not an image"),
    "one-pixel": ("x.png", lambda p: Image.new("RGB", (1, 1)).save(p), "1x1 pixels"),
    "one-row": ("x.png", lambda p: Image.new("RGB", (50, 1)).save(p), "50x1 pixels"),
    "folder-named-jpg": ("x.jpg", lambda p: p.mkdir(), "no such file"),
    "missing": ("x.jpg", lambda p: None, "no such file"),
    "dangling-link": ("x.jpg", lambda p: os.symlink(p.parent / "gone.jpg", p), "no such file"),
    "zip-as-jpg": ("x.jpg", _write(b"PK\x03\x04" + b"\x00" * 100), "not an image"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_unreadable_photo_is_bad_image_naming_the_file(tmp_path: Path, case: str) -> None:
    name, make, problem = BAD_FILES[case]
    path = tmp_path / name
    make(path)
    with pytest.raises(BadImageError, match=problem) as info:
        imageio.load_rgb(path)
    assert str(path) in str(info.value)
    good = imageio.load_rgb(make_photo(tmp_path / "good.png"))  # the next photo still works
    assert good.width == 64 and good.height == 48


@pytest.mark.parametrize(
    ("tag", "value", "name"),
    [
        (FOCAL_35, 1_000_000, "FocalLengthIn35mmFilm"),
        (FOCAL_35, 2, "FocalLengthIn35mmFilm"),
        (FOCAL_35, 65535, "FocalLengthIn35mmFilm"),
        (FOCAL, TiffImagePlugin.IFDRational(1_000_000, 1), "FocalLength"),
        (FOCAL, TiffImagePlugin.IFDRational(-50, 1), "FocalLength"),
        (FOCAL, TiffImagePlugin.IFDRational(1, 100), "FocalLength"),
        (FOCAL, TiffImagePlugin.IFDRational(5, 0), "FocalLength"),
    ],
)
def test_implausible_exif_focal_falls_back_with_a_warning_naming_the_tag(
    tmp_path: Path, tag: int, value: object, name: str
) -> None:
    path = make_photo(tmp_path / "exif.jpg", exif={tag: value})
    loaded = imageio.load_rgb(path)
    assert loaded.focal_source == "default" and loaded.focal_35mm == imageio.DEFAULT_FOCAL_35MM
    assert np.isfinite(loaded.f_px) and loaded.f_px > 0
    named = [w for w in loaded.warnings if name in w]
    assert named and f"0x{tag:04X}" in named[0] and "plausible" in named[0], loaded.warnings


def test_implausible_35mm_falls_back_to_a_plausible_focal_length(tmp_path: Path) -> None:
    path = make_photo(tmp_path / "exif.jpg", exif={FOCAL_35: 0xFFFF, FOCAL: TiffImagePlugin.IFDRational(50, 1)})
    loaded = imageio.load_rgb(path)
    assert loaded.focal_source == "exif_focal_length" and loaded.focal_35mm == 50.0
    assert any("FocalLengthIn35mmFilm" in w for w in loaded.warnings)


def test_zero_focal_length_means_unknown_without_a_tag_warning(tmp_path: Path) -> None:
    path = make_photo(tmp_path / "exif.jpg", exif={FOCAL: TiffImagePlugin.IFDRational(0, 1)})
    loaded = imageio.load_rgb(path)
    assert loaded.focal_source == "default"
    assert not any("FocalLength (tag" in w for w in loaded.warnings)
    assert any("no focal length" in w for w in loaded.warnings)


@pytest.mark.parametrize(
    ("option", "value"), [("focal_mm", float("nan")), ("focal_mm", -5.0), ("focal_px", float("inf")), ("focal_px", 0.0)]
)
def test_non_finite_or_non_positive_focal_override_is_refused(photo: Path, option: str, value: float) -> None:
    with pytest.raises(BadRequestError, match=option):
        imageio.load_rgb(photo, **{option: value})


def test_bad_photo_in_predict_file_leaves_no_ply_and_the_next_works(tmp_path: Path, tiny_model: object) -> None:
    from sharp_sidecar.inference.predict import predict_file

    bad = tmp_path / "in" / "bad.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    with pytest.raises(BadImageError, match=r"bad\.jpg"):
        predict_file(tiny_model, bad, out / "bad.ply")  # type: ignore[arg-type]
    assert not (out / "bad.ply").exists() and leftovers(tmp_path) == []
    result = predict_file(tiny_model, make_photo(tmp_path / "in" / "ok.png"), out / "ok.ply")  # type: ignore[arg-type]
    assert result.ply.is_file() and result.num_gaussians > 0
