"""The bench's references: the synthetic weights and photo it runs on, and how far a path is from FP32.

The weights follow the rule of ../shared/reference/make_weights.py (per key, a crc32-seeded normal draw
scaled by the key's kind), so the bench, the tests and the GPU scripts all run the same network.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import torch

from ..gaussians import Gaussians, covariances
from ..model import create_predictor
from ..model.checkpoint import is_tolerated


def reference_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """One tensor of the reference test weights (the rule of ../shared/reference/make_weights.py)."""
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    n = torch.randn(shape, generator=generator, dtype=torch.float32)
    if key.endswith(("cls_token", "pos_embed")):
        return n * 0.02
    if key.endswith(".gamma"):
        return (1.0 + 0.1 * n) * 0.1
    if key.endswith(".bias"):
        return n * 0.02
    if len(shape) == 1 and key.endswith(".weight"):
        return 1.0 + 0.1 * n
    if len(shape) >= 2:
        return n * (1.0 / math.sqrt(math.prod(shape) // shape[0]))
    return n


def reference_state_dict(preset: str = "default") -> dict[str, torch.Tensor]:
    """The reference weights for a preset, without the tensors inference never reads (heads, alignment)."""
    with torch.device("meta"):
        model = create_predictor(preset, device="meta")
    return {
        key: reference_tensor(key, tuple(t.shape)) for key, t in model.state_dict().items() if not is_tolerated(key)
    }


def synthetic_photo(path: Path, width: int, height: int) -> Path:
    """A JPEG with smooth gradients, discs and fine noise (some texture for the render comparison)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 37.0) * np.cos(y / 23.0)], -1)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.03, 0.2) * width
        rgb[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 1, 3)
    rgb += rng.normal(0, 0.03, rgb.shape).astype(np.float32)
    Image.fromarray((rgb.clip(0, 1) * 255).astype(np.uint8)).save(path, quality=92)
    return path


def relative_errors(fast: Gaussians, ref: Gaussians) -> dict[str, float]:
    """‖fast − ref‖ / ‖ref‖ per attribute (covariances in float64 from scales and rotations)."""

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.double(), b.double()
        return float((a - b).norm() / b.norm().clamp(min=1e-300))

    cov_fast = covariances(Gaussians(*(t.double() for t in fast._fields())))
    cov_ref = covariances(Gaussians(*(t.double() for t in ref._fields())))
    return {
        "means": rel(fast.means, ref.means),
        "covariances": rel(cov_fast, cov_ref),
        "colors": rel(fast.colors, ref.colors),
        "opacities": rel(fast.opacities, ref.opacities),
    }
