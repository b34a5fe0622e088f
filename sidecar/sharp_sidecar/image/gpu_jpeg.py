"""JPEG decoding on an NVIDIA GPU (nvJPEG, through torchvision), for the fast path.

On the H100 machine a 1536×1024 JPEG takes 1.4 ms here against Pillow's 16 ms, and a 12-megapixel phone photo
10 ms against 200 ms (docs/performance-notes.md). nvJPEG's chroma upsampling and IDCT round differently from
libjpeg-turbo's: pixels differ by 0.5-0.7 levels on average, as between any two JPEG decoders, so the FP32
reference path keeps Pillow. torchvision is optional: without it, or for a JPEG that nvJPEG rejects, the caller
falls back to Pillow.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)


@functools.cache
def _decoder() -> Callable[..., torch.Tensor] | None:
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        logger.info("JPEGs are decoded by Pillow on the CPU (torchvision's nvJPEG decoder unavailable: %s)", exc)
        return None
    return functools.partial(decode_jpeg, mode=ImageReadMode.RGB)


def available() -> bool:
    """Whether torchvision's GPU JPEG decoder can be imported."""
    return _decoder() is not None


def orient(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """(H, W, C) pixels -> the upright picture for an EXIF orientation 1-8, as ``PIL.ImageOps.exif_transpose``.

    Any other value counts as 1 (Pillow ignores it too).
    """
    if orientation == 2:
        return pixels.flip(1)
    if orientation == 3:
        return pixels.flip(0, 1)
    if orientation == 4:
        return pixels.flip(0)
    if orientation == 5:
        return pixels.transpose(0, 1)
    if orientation == 6:
        return torch.rot90(pixels, -1, (0, 1))
    if orientation == 7:
        return pixels.transpose(0, 1).flip(0, 1)
    if orientation == 8:
        return torch.rot90(pixels, 1, (0, 1))
    return pixels


def decode(data: bytes, orientation: int, size: tuple[int, int], device: torch.device) -> torch.Tensor | None:
    """JPEG bytes -> upright (H, W, 3) uint8 pixels on ``device``, or None where Pillow must decode instead.

    Args:
        data: the whole file.
        orientation: its EXIF orientation (1-8).
        size: (W, H) stored in the file's header; a decode of another size is refused.
        device: a CUDA device.
    """
    decoder = _decoder()
    if decoder is None or device.type != "cuda":
        return None
    try:
        chw = decoder(torch.frombuffer(bytearray(data), dtype=torch.uint8), device=device)
    except RuntimeError as exc:  # progressive or unusual subsampling on some nvJPEG versions, or corrupt data
        logger.info("nvJPEG could not decode this JPEG (%s); Pillow decodes it", exc)
        return None
    if tuple(chw.shape) != (3, size[1], size[0]):
        logger.info("nvJPEG decoded %s for a %dx%d JPEG; Pillow decodes it", tuple(chw.shape), *size)
        return None
    return orient(chw.permute(1, 2, 0), orientation)


_WARM: set[str] = set()  # devices whose nvJPEG decoder has been started by warm_up


def is_warm(device: torch.device) -> bool:
    """Whether :func:`warm_up` has started nvJPEG on ``device`` (until then the fast path decodes with Pillow,
    so a first photo never waits for torchvision's import and nvJPEG's start)."""
    return str(device) in _WARM or (device.type == "cuda" and f"cuda:{torch.cuda.current_device()}" in _WARM)


def warm_up(device: torch.device) -> bool:
    """Import torchvision and start nvJPEG on ``device`` with a tiny JPEG, so the first photo does not wait for
    it (about a second); returns whether the GPU decoder works. Called when a fast-path model is prepared."""
    from PIL import Image

    if device.type != "cuda" or not available():
        return False
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 120, 40)).save(buffer, format="JPEG")
    pixels = decode(buffer.getvalue(), 1, (16, 16), device)
    if pixels is not None:
        torch.cuda.synchronize(device)
        _WARM.update({str(device), f"cuda:{pixels.device.index}"})
    return pixels is not None
