"""The GPU JPEG path's logic on the CPU: orientation, size checks and every fallback to Pillow.

nvJPEG itself needs an NVIDIA GPU: its speed and its pixels against Pillow's (mean |Δ| 0.5-0.7 levels) are
measured by scripts/gpu_probe.py and `sharp bench` on the GPU machine. Here a stand-in decoder (Pillow into a
(3, H, W) tensor, as torchvision returns) takes its place, so everything around the decoder is real.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sharp_sidecar.image import gpu_jpeg, imageio
from sharp_sidecar.inference.pipeline import preprocess

from .test_imageio import STORED_FROM_UPRIGHT, _exif, _pattern

CUDA = torch.device("cuda")


def _stand_in(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


@pytest.fixture
def fake_nvjpeg(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def decoder(data: torch.Tensor, device: torch.device) -> torch.Tensor:
        calls.append(len(data))
        return _stand_in(data, device)

    monkeypatch.setattr(gpu_jpeg, "_decoder", lambda: decoder)
    return calls


@pytest.mark.parametrize("orientation", range(0, 10))
def test_orient_matches_pillow_exif_transpose(orientation: int) -> None:
    from PIL import ImageOps

    stored = np.ascontiguousarray(STORED_FROM_UPRIGHT.get(orientation, lambda u: u)(_pattern(5, 7)))
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(image))
    got = gpu_jpeg.orient(torch.from_numpy(stored), orientation).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_device_decode_is_upright_with_the_focal_of_the_upright_size(
    tmp_path: Path, fake_nvjpeg: list[int], orientation: int
) -> None:
    upright = np.kron(_pattern(6, 9), np.ones((8, 8, 1), dtype=np.uint8))  # 8x8 blocks survive JPEG
    stored = np.ascontiguousarray(STORED_FROM_UPRIGHT[orientation](upright))
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=_exif(orientation, f35=50))
    pillow = imageio.load_rgb(path)
    device = imageio.load_rgb(path, device=CUDA)
    assert fake_nvjpeg, "the device decoder was not used"
    assert isinstance(device.rgb, torch.Tensor) and device.rgb.dtype == torch.uint8
    np.testing.assert_array_equal(device.rgb.numpy(), pillow.rgb)
    assert (device.width, device.height) == (pillow.width, pillow.height) == (72, 48)
    assert device.f_px == pillow.f_px == pytest.approx(50 * math.hypot(72, 48) / math.hypot(36, 24))
    image, factor = preprocess(device.rgb, device.f_px, 32, torch.device("cpu"))
    ref_image, ref_factor = preprocess(pillow.rgb, pillow.f_px, 32, torch.device("cpu"))
    assert torch.equal(image, ref_image) and torch.equal(factor, ref_factor)


@pytest.mark.parametrize(
    ("name", "save"),
    [
        ("png", lambda im, p: im.save(p.with_suffix(".png"))),
        ("gray", lambda im, p: im.convert("L").save(p, quality=95)),
        ("cmyk", lambda im, p: im.convert("CMYK").save(p, quality=95)),
    ],
)
def test_pillow_decodes_what_is_not_a_colour_jpeg(tmp_path: Path, fake_nvjpeg: list[int], name: str, save) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "photo.jpg"
    save(Image.fromarray(_pattern(16, 24)), path)
    path = path if path.exists() else path.with_suffix(".png")
    loaded = imageio.load_rgb(path, device=CUDA)
    assert not fake_nvjpeg and isinstance(loaded.rgb, np.ndarray)
    assert loaded.rgb.shape == (16, 24, 3)


def test_pillow_decodes_when_nvjpeg_fails_or_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "photo.jpg"
    Image.fromarray(_pattern(16, 24)).save(path, quality=95)
    expected = imageio.load_rgb(path).rgb

    def failing(data: torch.Tensor, device: torch.device) -> torch.Tensor:
        raise RuntimeError("nvjpegDecode failed: NVJPEG_STATUS_JPEG_NOT_SUPPORTED")

    def wrong_size(data: torch.Tensor, device: torch.device) -> torch.Tensor:
        return torch.zeros(3, 8, 8, dtype=torch.uint8)

    for decoder in (None, failing, wrong_size):
        monkeypatch.setattr(gpu_jpeg, "_decoder", lambda d=decoder: d)
        loaded = imageio.load_rgb(path, device=CUDA)
        assert isinstance(loaded.rgb, np.ndarray)
        np.testing.assert_array_equal(loaded.rgb, expected)
    # A CPU device never goes to nvJPEG, whatever is installed.
    monkeypatch.setattr(gpu_jpeg, "_decoder", lambda: failing)
    assert isinstance(imageio.load_rgb(path, device=torch.device("cpu")).rgb, np.ndarray)


def test_broken_jpeg_is_a_bad_image_on_the_device_path_too(tmp_path: Path, fake_nvjpeg: list[int]) -> None:
    path = tmp_path / "broken.jpg"
    Image.fromarray(_pattern(16, 24)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(imageio.BadImageError):
        imageio.load_rgb(path, device=CUDA)
