"""The plain-torch rasteriser against a literal per-Gaussian transcription of gsplat's compositing loop."""

from __future__ import annotations

import math

import pytest
import torch
from sharp_sidecar.render import rasterize_torch as rt


def sequential_reference(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    eps2d: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """gsplat's per-pixel loop written out one Gaussian at a time (in float64), vectorised over pixels only.

    A deliberately naive oracle for a few hundred Gaussians: no tiles, no cumulative products.
    """
    proj = rt.project(means, quats, scales, opacities, viewmat, K, width, height, eps2d=eps2d)
    order = torch.argsort(proj.depths, stable=True)
    px, py = torch.meshgrid(
        torch.arange(width, dtype=torch.float64) + 0.5, torch.arange(height, dtype=torch.float64) + 0.5, indexing="xy"
    )
    T = torch.ones(height, width, dtype=torch.float64)
    out = torch.zeros(height, width, colors.shape[1] + 1, dtype=torch.float64)
    done = torch.zeros(height, width, dtype=torch.bool)
    for k in order:  # the oracle's loop over Gaussians: a test-only transcription, a few hundred at most
        g = proj.index[k]
        mx, my = proj.means2d[k].double()
        a, b, c = proj.conics[k].double()
        dx, dy = mx - px, my - py
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp(opacities[g].double() * torch.exp(-sigma), max=0.999)
        use = (sigma >= 0) & (alpha >= 1 / 255) & ~done
        next_T = T * (1 - alpha)
        stop = use & (next_T <= 1e-4)
        done |= stop
        use &= ~stop
        feature = torch.cat([colors[g].double(), proj.depths[k : k + 1].double()])
        out += torch.where(use, alpha * T, 0.0)[..., None] * feature
        T = torch.where(use, next_T, T)
    return out, 1 - T


def random_scene(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.7, 0.6]) + torch.tensor([0.0, 0.0, 4.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.3 + 0.005
    opacities = torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    return means, quats, scales, opacities, colors


def rotation_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    view = torch.eye(4)
    view[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    view[:3, 3] = torch.tensor([0.2, -0.1, 0.5])
    return view


@pytest.mark.parametrize("eps2d", [0.0, 0.3])
def test_tiled_compositing_matches_the_sequential_loop(eps2d: float) -> None:
    means, quats, scales, opacities, colors = random_scene(400, seed=3)
    width, height = 70, 45  # not multiples of the 16-pixel tile
    K = torch.tensor([[60.0, 0, 34.5], [0, 55.0, 22.0], [0, 0, 1]])
    viewmats = torch.stack([torch.eye(4), rotation_y(0.3)])
    image, alpha = rt.rasterize(
        means, quats, scales, opacities, colors, viewmats, K.expand(2, 3, 3), width, height, eps2d=eps2d, budget=1 << 16
    )
    assert image.shape == (2, height, width, 4) and alpha.shape == (2, height, width, 1)
    for c in range(2):
        ref_image, ref_alpha = sequential_reference(
            means, quats, scales, opacities, colors, viewmats[c], K, width, height, eps2d
        )
        assert (image[c].double() - ref_image).abs().max() < 2e-5
        assert (alpha[c, ..., 0].double() - ref_alpha).abs().max() < 2e-5
        # The scene is dense enough that some pixels saturate (the early stop is exercised) and some stay empty.
        assert ref_alpha.max() > 0.9998 and ref_alpha.min() < 0.05


def test_near_plane_and_behind_the_camera_are_dropped() -> None:
    means = torch.tensor([[0.0, 0.0, 0.005], [0.0, 0.0, -2.0], [0.0, 0.0, 3.0]])
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(3, 1)
    scales = torch.full((3, 3), 0.05)
    K = torch.tensor([[50.0, 0, 16], [0, 50.0, 16], [0, 0, 1]])
    proj = rt.project(means, quats, scales, torch.ones(3) * 0.9, torch.eye(4), K, 32, 32, eps2d=0.0)
    assert proj.index.tolist() == [2]
    assert torch.allclose(proj.means2d[0], torch.tensor([16.0, 16.0]))
    # Footprint: ceil(extend·σ_px) with extend = sqrt(2 ln(255·0.9)) and σ_px = 50·0.05/3.
    extend = math.sqrt(2 * math.log(255 * 0.9))
    assert proj.radii[0].tolist() == [math.ceil(extend * 50 * 0.05 / 3)] * 2


def test_faint_gaussians_and_off_screen_footprints_are_dropped() -> None:
    means = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 3.0], [5.0, 0.0, 3.0]])
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(3, 1)
    scales = torch.full((3, 3), 0.05)
    opacities = torch.tensor([1.0 / 256, 0.5, 0.5])
    K = torch.tensor([[50.0, 0, 16], [0, 50.0, 16], [0, 0, 1]])
    proj = rt.project(means, quats, scales, opacities, torch.eye(4), K, 32, 32, eps2d=0.0)
    assert proj.index.tolist() == [1]


def test_empty_view_renders_black() -> None:
    means, quats, scales, opacities, colors = random_scene(50, seed=1)
    view = torch.eye(4)
    view[2, 3] = -100.0  # everything behind the camera
    image, alpha = rt.rasterize(means, quats, scales, opacities, colors, view[None], torch.eye(3)[None] * 20, 20, 10)
    assert image.abs().max() == 0 and alpha.abs().max() == 0
