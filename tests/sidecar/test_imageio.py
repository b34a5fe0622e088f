from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sharp_sidecar.errors import BadImageError, BadRequestError
from sharp_sidecar.image import imageio
from sharp_sidecar.image.imageio import load_rgb

DIAG_35 = math.hypot(36.0, 24.0)


def _pattern(h: int = 12, w: int = 18) -> np.ndarray:
    """An image where every pixel differs, so any wrong flip or rotation shows."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 13 % 256, yy * 17 % 256, (xx * 7 + yy * 29) % 256], axis=-1).astype(np.uint8)


def _exif(orientation: int | None = None, f35: float | None = None, focal: float | None = None) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    if f35 is not None:
        sub[0xA405] = f35
    if focal is not None:
        sub[0x920A] = focal
    return exif.tobytes()


# What each EXIF orientation means for the stored pixels, written from the EXIF 2.3 table
# ("row 0 is the visual top / right / bottom / left, column 0 is ...") rather than from Pillow.
STORED_FROM_UPRIGHT = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],
    3: lambda u: u[::-1, ::-1],
    4: lambda u: u[::-1, :],
    5: lambda u: u.transpose(1, 0, 2),
    6: lambda u: np.rot90(u, 1),
    7: lambda u: u[::-1, ::-1].transpose(1, 0, 2),
    8: lambda u: np.rot90(u, -1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_all_eight(tmp_path: Path, orientation: int) -> None:
    upright = _pattern()
    stored = np.ascontiguousarray(STORED_FROM_UPRIGHT[orientation](upright))
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(stored).save(path, exif=_exif(orientation, f35=50))
    loaded = load_rgb(path)
    np.testing.assert_array_equal(loaded.rgb, upright)
    assert (loaded.width, loaded.height) == (18, 12)
    # The focal length uses the upright size (the diagonal is the same; this guards the W/H order).
    assert loaded.f_px == pytest.approx(50 * math.hypot(18, 12) / DIAG_35, rel=1e-12)


def test_reference_images_match_the_reference(reference_images: dict[str, Path], reference_npz) -> None:  # type: ignore[no-untyped-def]
    for name, path in reference_images.items():
        ref = reference_npz(name)
        loaded = load_rgb(path)
        assert loaded.f_px == pytest.approx(float(ref["f_px"]), rel=1e-6)
        assert int(loaded.rgb.astype(np.int64).sum()) == int(ref["image_u8_sum"])
        assert [loaded.width, loaded.height] == [int(v) for v in ref["image_wh"]]
        assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape == (loaded.height, loaded.width, 3)


def test_plain_rgb_is_numpy_asarray_bit_for_bit(reference_images: dict[str, Path]) -> None:
    path = reference_images["photo_exif"]
    with Image.open(path) as im:
        expected = np.asarray(im)
    np.testing.assert_array_equal(load_rgb(path).rgb, expected)


def test_focal_rules(tmp_path: Path) -> None:
    rgb = _pattern(40, 60)
    diag = math.hypot(60, 40)

    def load(**tags: float) -> imageio.LoadedImage:
        path = tmp_path / f"f{len(list(tmp_path.iterdir()))}.jpg"
        Image.fromarray(rgb).save(path, exif=_exif(**tags), quality=95)
        return load_rgb(path)

    both = load(f35=26, focal=4.2)
    assert both.focal_source == "exif_35mm" and both.f_px == pytest.approx(26 * diag / DIAG_35, rel=1e-12)
    phone = load(focal=4.2)  # no 35 mm tag: the phone crop-factor guess
    assert phone.focal_source == "exif_focal_length"
    assert phone.focal_35mm == pytest.approx(4.2 * 8.4)
    assert phone.f_px == pytest.approx(4.2 * 8.4 * diag / DIAG_35, rel=1e-9)
    camera = load(focal=50)  # a physical 50 mm lens is used as it is
    assert camera.focal_35mm == pytest.approx(50.0) and not camera.warnings
    zero35 = load(f35=0, focal=35)  # a 35 mm tag below 1 counts as missing
    assert zero35.focal_source == "exif_focal_length" and zero35.focal_35mm == pytest.approx(35.0)
    nothing = load()
    assert nothing.focal_source == "default" and nothing.focal_35mm == 30.0
    assert nothing.f_px == pytest.approx(30 * diag / DIAG_35, rel=1e-12)
    assert any("30 mm" in w for w in nothing.warnings)
    zero = load(focal=0)  # cameras that write 0 for "unknown" get the default, not f = 0
    assert zero.focal_source == "default"


def test_focal_overrides(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    Image.fromarray(_pattern(40, 60)).save(path, exif=_exif(f35=26))
    by_mm = load_rgb(path, focal_mm=85)
    assert by_mm.focal_source == "focal_mm" and by_mm.f_px == pytest.approx(85 * math.hypot(60, 40) / DIAG_35)
    by_px = load_rgb(path, focal_px=1234.5)
    assert by_px.focal_source == "focal_px" and by_px.f_px == 1234.5 and by_px.focal_35mm is None
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(BadRequestError, match="positive"):
            load_rgb(path, focal_mm=bad)
        with pytest.raises(BadRequestError, match="positive"):
            load_rgb(path, focal_px=bad)
    with pytest.raises(BadRequestError, match="not both"):
        load_rgb(path, focal_mm=30, focal_px=500)


def _save_and_load(tmp_path: Path, image: Image.Image, name: str, **save: object) -> imageio.LoadedImage:
    path = tmp_path / name
    image.save(path, **save)
    return load_rgb(path)


def test_grayscale_bilevel_and_palette(tmp_path: Path) -> None:
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    out = _save_and_load(tmp_path, Image.fromarray(gray, "L"), "l.png").rgb
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))

    bits = Image.fromarray(gray > 100).convert("1")
    out = _save_and_load(tmp_path, bits, "b.png").rgb
    np.testing.assert_array_equal(out[..., 0], np.where(gray > 100, 255, 0))

    palette = Image.fromarray(_pattern(6, 8)).quantize(16)
    assert palette.mode == "P"
    out = _save_and_load(tmp_path, palette, "p.png").rgb
    np.testing.assert_array_equal(out, np.asarray(palette.convert("RGB")))
    assert not np.array_equal(out[..., 0], np.asarray(palette))  # colours, not palette indices


def test_alpha_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (100, 50, 0)
    rgba[..., 3] = [[0], [128], [255], [64]]
    out = _save_and_load(tmp_path, Image.fromarray(rgba, "RGBA"), "a.png")
    a = rgba[..., 3:4].astype(np.float64) / 255
    expected = np.rint(rgba[..., :3] * a + 255 * (1 - a))
    np.testing.assert_allclose(out.rgb, expected, atol=0.51)
    np.testing.assert_array_equal(out.rgb[0, 0], (255, 255, 255))  # fully transparent -> background
    np.testing.assert_array_equal(out.rgb[2, 0], (100, 50, 0))  # opaque -> itself
    assert any("white" in w for w in out.warnings)

    la = Image.fromarray(np.stack([np.full((4, 4), 40, np.uint8), rgba[..., 3]], -1), "LA")
    out_la = _save_and_load(tmp_path, la, "la.png").rgb
    np.testing.assert_allclose(out_la[..., 1], np.rint(40 * a[..., 0] + 255 * (1 - a[..., 0])), atol=0.51)

    # Palette with a transparent index (GIF style): that index shows the background.
    p = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    out_p = _save_and_load(tmp_path, p, "t.gif", transparency=0).rgb
    np.testing.assert_array_equal(out_p[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(out_p[0, 1], (200, 100, 50))


def test_premultiplied_alpha_modes() -> None:
    warnings: list[str] = []
    rgba = Image.new("RGBa", (2, 2), (50, 25, 0, 128))  # premultiplied: colour (100, 50, 0) at half coverage
    out = imageio._to_rgb8(rgba, warnings)
    np.testing.assert_allclose(out[0, 0], (50 + 127, 25 + 127, 127), atol=1)
    la = Image.frombytes("La", (1, 1), bytes([20, 64]))  # grey 80 at quarter coverage
    np.testing.assert_allclose(imageio._to_rgb8(la, [])[0, 0], (20 + 191,) * 3, atol=1)
    assert warnings


def test_palette_with_alpha() -> None:
    pa = Image.new("PA", (2, 1))
    pa.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pa.putdata([(1, 255), (1, 0)])
    out = imageio._to_rgb8(pa, [])
    np.testing.assert_array_equal(out[0], [(200, 100, 50), (255, 255, 255)])
    rgba_palette = Image.new("P", (2, 1))
    rgba_palette.putpalette([10, 20, 30, 0, 200, 100, 50, 255], rawmode="RGBA")
    rgba_palette.putdata([0, 1])
    np.testing.assert_array_equal(imageio._to_rgb8(rgba_palette, [])[0], [(255, 255, 255), (200, 100, 50)])


def test_sixteen_bit_scaled(tmp_path: Path) -> None:
    values = np.array([[0, 257, 65535, 32896], [1000, 2570, 65000, 128]], np.uint16)
    out = _save_and_load(tmp_path, Image.fromarray(values), "g16.png")
    np.testing.assert_array_equal(out.rgb[..., 0], np.rint(values / 257.0))
    assert any("16-bit" in w for w in out.warnings)
    out_tif = _save_and_load(tmp_path, Image.fromarray(values), "g16.tif")
    np.testing.assert_array_equal(out_tif.rgb, out.rgb)
    mode_i = Image.fromarray(values.astype(np.int32), "I")
    np.testing.assert_array_equal(imageio._to_rgb8(mode_i, [])[..., 2], np.rint(values / 257.0))


def test_float_clipped(tmp_path: Path) -> None:
    values = np.array([[-1.0, 0.0, 0.5], [1.0, 2.0, 0.25]], np.float32)
    out = _save_and_load(tmp_path, Image.fromarray(values, "F"), "f.tif").rgb
    np.testing.assert_array_equal(out[..., 0], [[0, 0, 128], [255, 255, 64]])


def test_cmyk_and_other_colour_modes(tmp_path: Path) -> None:
    cmyk = np.zeros((2, 3, 4), np.uint8)
    cmyk[0, 0] = (255, 0, 0, 0)  # cyan
    cmyk[0, 1] = (0, 0, 0, 255)  # black
    cmyk[0, 2] = (0, 255, 255, 0)  # red
    out = _save_and_load(tmp_path, Image.fromarray(cmyk, "CMYK"), "c.tif").rgb
    np.testing.assert_array_equal(out[0], [(0, 255, 255), (0, 0, 0), (255, 0, 0)])
    np.testing.assert_array_equal(out[1], np.full((3, 3), 255))
    out_jpg = _save_and_load(tmp_path, Image.fromarray(cmyk, "CMYK"), "c.jpg", quality=100).rgb
    assert np.abs(out_jpg.astype(int) - out.astype(int)).max() < 40  # lossy, but converted not raw
    for mode, pixel, rgb in (("HSV", (0, 255, 255), (255, 0, 0)), ("LAB", (255, 128, 128), (255, 255, 255))):
        out_mode = imageio._to_rgb8(Image.new(mode, (2, 2), pixel), [])
        np.testing.assert_allclose(out_mode[0, 0], rgb, atol=2)


def test_other_formats(tmp_path: Path) -> None:
    rgb = _pattern(16, 24)
    for name in ("x.bmp", "x.tiff", "x.webp", "x.TGA"):
        kwargs = {"lossless": True} if name.endswith("webp") else {}
        out = _save_and_load(tmp_path, Image.fromarray(rgb), name, **kwargs)
        np.testing.assert_array_equal(out.rgb, rgb, err_msg=name)


def test_heic(tmp_path: Path) -> None:
    imageio.register_heif()
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 30, 30)
    rgb[:, 24:] = (30, 30, 200)
    path = tmp_path / "photo.HEIC"
    Image.fromarray(rgb).save(path, format="HEIF", quality=95, exif=_exif(orientation=6, f35=26))
    loaded = load_rgb(path)
    # Orientation 6: the stored left half (red) ends up on top, exactly once.
    assert (loaded.width, loaded.height) == (32, 48)
    assert loaded.focal_source == "exif_35mm"
    assert loaded.f_px == pytest.approx(26 * math.hypot(32, 48) / DIAG_35)
    top, bottom = loaded.rgb[:20].reshape(-1, 3).mean(0), loaded.rgb[-20:].reshape(-1, 3).mean(0)
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]


def test_ten_bit_heic_is_scaled_to_8_bit(tmp_path: Path) -> None:
    import pillow_heif

    rgb16 = np.zeros((16, 24, 3), np.uint16)
    rgb16[:, :12] = 65535  # white
    rgb16[:, 12:] = (32896, 0, 16448)  # about (128, 0, 64) in 8 bit
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(24, 16), data=rgb16.tobytes())
    path = tmp_path / "hdr.heif"
    heif.save(path, quality=-1)  # lossless, stored as 10 bit
    loaded = load_rgb(path)
    assert loaded.rgb.dtype == np.uint8
    np.testing.assert_allclose(loaded.rgb[:, :10].reshape(-1, 3).mean(0), (255, 255, 255), atol=2)
    np.testing.assert_allclose(loaded.rgb[:, 14:].reshape(-1, 3).mean(0), (128, 0, 64), atol=3)


def test_supported_suffixes() -> None:
    suffixes = imageio.supported_suffixes()
    assert {".jpg", ".jpeg", ".png", ".tif", ".webp", ".heic", ".heif"} <= suffixes
    assert all(s == s.lower() and s.startswith(".") for s in suffixes)
    assert imageio.is_supported("A/B/IMG_1.JPG") and imageio.is_supported("x.HeIc")
    assert not imageio.is_supported("notes.txt")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="no such file"):
        load_rgb(tmp_path / "missing.jpg")
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    with pytest.raises(BadImageError, match=r"notes\.jpg"):
        load_rgb(text)
    good = tmp_path / "good.jpg"
    Image.fromarray(_pattern(64, 64)).save(good, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:400])
    with pytest.raises(BadImageError, match=r"cut\.jpg.*decode"):
        load_rgb(cut)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    with pytest.raises(BadImageError, match="at least 2x2"):
        load_rgb(tiny)
    assert BadImageError.code == "bad_image"
