"""Sliding-pyramid geometry: pyramid sampling, patch split / merge, output sizes (spec §4.1.2)."""

from __future__ import annotations

import pytest
import torch
from sharp_sidecar.model.config import PRESETS
from sharp_sidecar.model.encoder import (
    SlidingPyramidNetwork,
    image_pyramid,
    merge_patches,
    patch_offsets,
    split_patches,
)


def test_patch_offsets_of_the_published_geometry() -> None:
    assert patch_offsets(1536, 384, 0.25) == [0, 288, 576, 864, 1152]
    assert patch_offsets(768, 384, 0.5) == [0, 192, 384]
    assert patch_offsets(384, 384, 0.5) == [0]
    # tiny preset: same counts
    assert patch_offsets(512, 128, 0.25) == [0, 96, 192, 288, 384]
    assert patch_offsets(256, 128, 0.5) == [0, 64, 128]


def test_pyramid_levels_average_the_documented_pixels() -> None:
    x = torch.randn(1, 2, 16, 16, dtype=torch.float64)
    level1, level2 = image_pyramid(x)
    torch.testing.assert_close(level1, x.unfold(2, 2, 2).unfold(3, 2, 2).mean((-1, -2)))
    # level 2 pixel k = mean of input pixels 4k+1 and 4k+2 per axis (not a 4x4 box)
    inner = x[..., 1::4, :][..., :4, :] + x[..., 2::4, :][..., :4, :]
    inner = (inner[..., 1::4] + inner[..., 2::4]) / 4
    torch.testing.assert_close(level2, inner)


def test_split_orders_patches_row_major_and_patch_major() -> None:
    b = 2
    x = torch.arange(b * 1536 * 1536, dtype=torch.float32).view(b, 1, 1536, 1536)
    patches = split_patches(x, 384, 0.25)
    assert patches.shape == (25 * b, 1, 384, 384)
    # patch (row 1, col 3) of batch item 1 sits at index (1*5 + 3)*b + 1 and starts at (288, 864)
    torch.testing.assert_close(patches[(1 * 5 + 3) * b + 1, 0, 0, 0], x[1, 0, 288, 864])


@pytest.mark.parametrize("grid,count,padding,size", [(24, 5, 3, 96), (24, 3, 6, 48), (8, 5, 1, 32), (8, 3, 2, 16)])
def test_merge_trims_interior_borders(grid: int, count: int, padding: int, size: int) -> None:
    b = 1
    # Each patch map holds (patch index, local row, local col) so the merged map tells where every cell came from.
    n = count * count
    idx = torch.arange(n).view(n, 1, 1, 1).expand(n, 1, grid, grid).float()
    rows = torch.arange(grid).view(1, 1, grid, 1).expand(n, 1, grid, grid).float()
    cols = torch.arange(grid).view(1, 1, 1, grid).expand(n, 1, grid, grid).float()
    merged = merge_patches(torch.cat([idx, rows, cols], 1), b, padding)
    assert merged.shape == (b, 3, size, size)
    # First row/column: patch 0 keeps its top/left border; interior seams drop `padding` cells on each side.
    assert merged[0, :, 0, 0].tolist() == [0, 0, 0]
    first = grid - padding  # cells kept from patch 0 along an axis
    assert merged[0, :, 0, first].tolist() == [1, 0, padding]
    assert merged[0, :, first, 0].tolist() == [count, padding, 0]
    assert merged[0, :, -1, -1].tolist() == [n - 1, grid - 1, grid - 1]


def test_tiny_encoder_output_sizes() -> None:
    config = PRESETS["tiny"]
    spn = SlidingPyramidNetwork(config).eval()
    seen: dict[str, tuple[int, ...]] = {}
    with torch.no_grad():
        out = spn(torch.rand(1, 3, 512, 512) * 2 - 1, lambda name, t: seen.setdefault(name, tuple(t.shape)))
    dims = config.encoder_dims
    assert [tuple(e.shape) for e in out] == [
        (1, dims[0], 256, 256),
        (1, dims[1], 128, 128),
        (1, dims[2], 64, 64),
        (1, dims[3], 32, 32),
        (1, dims[4], 16, 16),
    ]
    assert seen["vit_patch_out"] == (35, 64, 8, 8)
    assert seen["vit_patch_block0"] == (35, 65, 64)
    assert seen["vit_image_out"] == (1, 64, 8, 8)
