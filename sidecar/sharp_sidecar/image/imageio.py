"""Photo file -> uint8 RGB pixels and a focal length in pixels (spec section 1, quirks fixed).

What differs from the reference ``load_rgb`` and why:

* HEIC/HEIF (and any other format pillow-heif registers) is opened through Pillow, whatever the
  suffix's case.
* EXIF orientation is applied for all eight values, the mirrored ones (2, 4, 5, 7) included, before
  the size is read, so f_px and the PLY's image size describe the upright picture.
* Pixel modes are converted the way a viewer shows them instead of a raw ``numpy.asarray``:
  palette and grayscale expand to RGB, 16-bit values are scaled to 8 bit (not truncated), CMYK /
  YCbCr / LAB / HSV are converted, float images are read as [0, 1] and clipped, and alpha is
  composited over **white** (:data:`ALPHA_BACKGROUND`), which is what image viewers and browsers
  show for transparent areas of a photo. 8-bit RGB goes through untouched, so it matches the
  reference bit for bit. No colour management: an embedded ICC profile is returned, not applied,
  and the pixels are treated as sRGB, as the model expects.
* A FocalLength of 0 (some cameras write it when unknown) counts as missing instead of giving a
  zero focal length; any EXIF focal length outside a plausible range (:data:`PLAUSIBLE_35MM_MM`,
  :data:`PLAUSIBLE_FOCAL_MM`: negative, 10^6 mm, ...) is ignored with a warning naming the tag, and the
  next source is used.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BadImageError, BadRequestError
from ..io.conventions import diagonal_35mm_mm

if TYPE_CHECKING:  # torch is imported only where the pixels are decoded on a GPU
    import torch

logger = logging.getLogger(__name__)

FocalSource = Literal["exif_35mm", "exif_focal_length", "default", "focal_mm", "focal_px"]

DEFAULT_FOCAL_35MM = 30.0
# Below this physical focal length the lens is assumed to be a phone's, whose crop factor is about 8.4.
PHONE_FOCAL_LIMIT_MM = 10.0
PHONE_CROP_FACTOR = 8.4
ALPHA_BACKGROUND = (255, 255, 255)
# EXIF values outside these (mm) are junk written by software, not lenses: fisheye-to-supertele 35 mm
# equivalents, and physical focal lengths from a phone's ~1.5 mm to the longest camera lenses.
PLAUSIBLE_35MM_MM = (4.0, 2400.0)
PLAUSIBLE_FOCAL_MM = (0.5, 2400.0)

_EXIF_IFD = 0x8769
_TAG_FOCAL_LENGTH = 0x920A
_TAG_FOCAL_35MM = 0xA405
_TAG_ORIENTATION = 0x0112
_HEIF_SUFFIXES = (".heic", ".heif", ".hif")
_ALPHA_MODES = ("RGBA", "LA", "PA")
_PREMULTIPLIED_MODES = ("RGBa", "La")


@dataclass
class LoadedImage:
    """An upright photo as the model sees it.

    Attributes:
        rgb: (H, W, 3) uint8, sRGB-encoded, orientation applied: a numpy array, or a torch tensor on the GPU
            when it was decoded there (``load_rgb(device=...)``).
        f_px: focal length in pixels of this W x H image (float64).
        focal_source: where the focal length came from.
        focal_35mm: the 35 mm-equivalent focal length used, in mm (None when given as focal_px).
        width, height: W and H in pixels after orientation.
        warnings: things a person should know (defaulted focal, composited alpha, ...).
        icc: the embedded ICC profile (bytes), not applied; None when absent.
    """

    rgb: np.ndarray | torch.Tensor
    f_px: float
    focal_source: FocalSource
    focal_35mm: float | None
    width: int
    height: int
    warnings: list[str] = field(default_factory=list)
    icc: bytes | None = None


@functools.cache
def register_heif() -> bool:
    """Register pillow-heif's opener with Pillow (tried once, so a missing pillow-heif warns once)."""
    try:
        import pillow_heif
    except ImportError:  # optional at run time: everything else still opens
        logger.warning("pillow-heif is not installed; HEIC/HEIF photos cannot be read")
        return False
    pillow_heif.register_heif_opener()
    return True


def supported_suffixes() -> frozenset[str]:
    """Lower-case file suffixes (with the dot) of every format this module can open."""
    register_heif()
    Image.init()
    suffixes = {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return frozenset(suffixes | set(_HEIF_SUFFIXES))


def is_supported(path: str | os.PathLike[str], suffixes: frozenset[str] | None = None) -> bool:
    """Whether the file's suffix (any case) is one of :func:`supported_suffixes`."""
    return Path(path).suffix.lower() in (suffixes if suffixes is not None else supported_suffixes())


def _rational(value: Any) -> float | None:
    """EXIF rational / int / tuple -> float, or None when absent, zero-denominator or not finite."""
    if value is None:
        return None
    try:
        if isinstance(value, tuple) and len(value) == 2:
            number = float(value[0]) / float(value[1])
        else:
            number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _exif_tags(image: Image.Image) -> dict[int, Any]:
    """IFD0 merged over the Exif sub-IFD (IFD0 wins on clashes, like the reference)."""
    exif = image.getexif()
    tags: dict[int, Any] = dict(exif.get_ifd(_EXIF_IFD))
    tags.update(exif)
    return tags


def _plausible(
    tags: dict[int, Any], tag: int, name: str, limits: tuple[float, float], warnings: list[str]
) -> float | None:
    """The tag's value in mm if it is plausible; else None, with a warning when the tag held a non-zero value."""
    raw = tags.get(tag)
    value = _rational(raw)
    if value is None and raw is None:
        return None
    if value is not None and limits[0] <= value <= limits[1]:
        return value
    if value == 0.0:  # some cameras write 0 for "unknown": not worth a warning of its own
        return None
    warnings.append(
        f"EXIF {name} (tag 0x{tag:04X}) = {raw!r} is not a plausible focal length "
        f"({limits[0]:g}-{limits[1]:g} mm); ignored"
    )
    return None


def _focal_35mm(tags: dict[int, Any], warnings: list[str]) -> tuple[float, FocalSource]:
    f35 = _plausible(tags, _TAG_FOCAL_35MM, "FocalLengthIn35mmFilm", PLAUSIBLE_35MM_MM, warnings)
    if f35 is not None:
        return f35, "exif_35mm"
    focal = _plausible(tags, _TAG_FOCAL_LENGTH, "FocalLength", PLAUSIBLE_FOCAL_MM, warnings)
    if focal is not None:
        # Only the physical focal length is known; a value this short is almost surely a phone lens.
        return (focal * PHONE_CROP_FACTOR if focal < PHONE_FOCAL_LIMIT_MM else focal), "exif_focal_length"
    warnings.append(
        f"no focal length in the EXIF data; assumed {DEFAULT_FOCAL_35MM:g} mm (35 mm equivalent). "
        "Give --focal-mm or --focal-px if you know it."
    )
    return DEFAULT_FOCAL_35MM, "default"


def _check_override(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number) or number <= 0.0:
        raise BadRequestError(f"{name} must be a positive number, got {value!r}")
    return number


def _composite(color: np.ndarray, alpha: np.ndarray, premultiplied: bool) -> np.ndarray:
    """uint8 colour (H, W, C) and alpha (H, W) -> colour over ALPHA_BACKGROUND, rounded to uint8."""
    c = color.astype(np.uint32)
    a = alpha.astype(np.uint32)[..., None]
    bg = np.asarray(ALPHA_BACKGROUND[: c.shape[-1]], dtype=np.uint32)
    covered = c * 255 if premultiplied else c * a
    out = (covered + bg * (255 - a) + 127) // 255
    return np.minimum(out, 255).astype(np.uint8)


def _to_rgb8(image: Image.Image, warnings: list[str]) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 as a viewer would show it."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)  # the common case: exactly the reference's pixels
    if mode in ("L", "1"):
        gray = np.asarray(image.convert("L"))
        return np.repeat(gray[..., None], 3, axis=2)
    if mode.startswith("I;16") or mode in ("I", "I;32", "I;32L", "I;32B"):
        # 16-bit samples (mode I is how older Pillow opened 16-bit PNGs): scale 0..65535 -> 0..255.
        values = np.asarray(image).astype(np.float64)
        gray = np.rint(np.clip(values, 0.0, 65535.0) * (255.0 / 65535.0)).astype(np.uint8)
        warnings.append("16-bit image scaled to 8 bit")
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        gray = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
        warnings.append("floating-point image read as values in [0, 1] and clipped")
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in _PREMULTIPLIED_MODES:
        array = np.asarray(image)
        color = _composite(array[..., :-1], array[..., -1], premultiplied=True)
        warnings.append("transparent areas composited over white")
        return np.repeat(color, 3, axis=2) if color.shape[-1] == 1 else color
    has_alpha = mode in _ALPHA_MODES or (
        mode == "P" and ("transparency" in image.info or (image.palette is not None and image.palette.mode == "RGBA"))
    )
    if has_alpha:
        array = np.asarray(image.convert("RGBA"))
        if bool((array[..., 3] < 255).any()):
            warnings.append("transparent areas composited over white")
        return _composite(array[..., :3], array[..., 3], premultiplied=False)
    # P, CMYK, YCbCr, LAB, HSV, RGBX and the rest: Pillow's own conversions are the right ones.
    return np.asarray(image.convert("RGB"))


def _open(path: Path) -> Image.Image:
    """Open lazily: the header and metadata are read, the pixels only by ``load()``."""
    if path.suffix.lower() in _HEIF_SUFFIXES and not register_heif():
        raise BadImageError(f"{path}: HEIC/HEIF needs pillow-heif; install it with `pip install pillow-heif`")
    register_heif()  # HEIF content under any other suffix opens too
    return Image.open(path)


def _decode_on_device(path: Path, raw: Image.Image, device: torch.device) -> torch.Tensor | None:
    """Upright pixels of a plain colour JPEG decoded on a CUDA device (nvJPEG), or None for Pillow to decode."""
    if device.type != "cuda" or raw.format != "JPEG" or raw.mode != "RGB":
        return None
    from . import gpu_jpeg

    if not gpu_jpeg.available():
        return None
    try:
        orientation = int(raw.getexif().get(_TAG_ORIENTATION, 1))
    except Exception:  # a broken EXIF block: Pillow's path reports it
        return None
    return gpu_jpeg.decode(path.read_bytes(), orientation, raw.size, device)


def load_rgb(
    path: str | os.PathLike[str],
    focal_mm: float | None = None,
    focal_px: float | None = None,
    device: torch.device | None = None,
) -> LoadedImage:
    """Read a photo, upright, as uint8 RGB with its focal length in pixels.

    Args:
        path: any image Pillow reads, or HEIC/HEIF.
        focal_mm: 35 mm-equivalent focal length in mm overriding the EXIF data.
        focal_px: focal length in pixels of the upright image, overriding everything else.
        device: a CUDA device to decode colour JPEGs on (nvJPEG, see :mod:`gpu_jpeg`); the pixels are then a
            tensor on it. Anything else, or without torchvision, is decoded by Pillow into a numpy array.

    Returns:
        The pixels (H, W, 3) uint8 and f_px = f35 · hypot(W, H) / hypot(36, 24), float64.

    Raises:
        BadImageError: the file is missing, unreadable, corrupt or not an image.
        BadRequestError: an override is not a positive number, or both are given.
    """
    path = Path(path)
    focal_mm = _check_override("focal_mm", focal_mm)
    focal_px = _check_override("focal_px", focal_px)
    if focal_mm is not None and focal_px is not None:
        raise BadRequestError("give focal_mm or focal_px, not both")
    if not path.is_file():
        raise BadImageError(f"{path}: no such file")
    warnings: list[str] = []
    try:
        with _open(path) as raw:
            pixels = _decode_on_device(path, raw, device) if device is not None else None
            if pixels is None:
                raw.load()
            try:
                tags = _exif_tags(raw)
                # All 8 orientations, mirrored ones included (the device decode applied its own already).
                upright = raw if pixels is not None else ImageOps.exif_transpose(raw)
            except Exception as exc:  # a broken EXIF block should not cost the picture itself
                logger.debug("EXIF of %s unreadable", path, exc_info=True)
                warnings.append(f"EXIF data unreadable ({exc}); orientation and focal length not used")
                tags = {}
                upright = raw.copy()
            icc = raw.info.get("icc_profile") or None
        rgb: np.ndarray | torch.Tensor = pixels if pixels is not None else _to_rgb8(upright, warnings)
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(f"{path}: not an image format this program can read") from None
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"{path}: too large to read safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, EOFError) as exc:
        raise BadImageError(f"{path}: cannot decode the image ({type(exc).__name__}: {exc})") from None
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    if width < 2 or height < 2:
        raise BadImageError(f"{path}: the image is {width}x{height} pixels; it needs at least 2x2")

    f35: float | None
    source: FocalSource
    if focal_px is not None:
        f35, source = None, "focal_px"
        f = focal_px
    else:
        if focal_mm is not None:
            f35, source = focal_mm, "focal_mm"
        else:
            f35, source = _focal_35mm(tags, warnings)
        f = f35 * math.hypot(width, height) / diagonal_35mm_mm()
    for message in warnings:
        logger.info("%s: %s", path.name, message)  # returned too: the caller decides how to show them
    return LoadedImage(
        # Pillow's arrays are read-only; torch wants writable ones.
        rgb=rgb if not isinstance(rgb, np.ndarray) else np.require(rgb, requirements=("C", "W")),
        f_px=float(f),
        focal_source=source,
        focal_35mm=f35,
        width=width,
        height=height,
        warnings=warnings,
        icc=icc if isinstance(icc, bytes) else None,
    )
