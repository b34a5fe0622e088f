"""Initializer base values and the composer at δ = 0 (spec §4.4, §4.7)."""

from __future__ import annotations

import torch
from sharp_sidecar.io import conventions
from sharp_sidecar.model.composer import GaussianComposer, inverse_softplus
from sharp_sidecar.model.initializer import MultiLayerInitializer


def _inputs(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=g)
    depth = 2.0 + 10 * torch.rand(1, 2, size, size, generator=g)
    depth[0, 1, 3, 4] = 1.5  # the nearest point, in layer 1
    depth[0, 0, 0, 0] = 1e4  # far: clamped to 100 after normalisation
    return image, depth


def test_initializer_base_values() -> None:
    image, depth = _inputs()
    base = MultiLayerInitializer()(image, depth)
    torch.testing.assert_close(base.global_scale, torch.tensor([1.5 + 1e-6]))
    depth_n = (depth / (1.5 + 1e-6)).clamp(max=100)
    expected_disp = torch.nn.functional.max_pool2d(1 / depth_n, 2).unsqueeze(1)
    torch.testing.assert_close(base.mean_inverse_z_ndc, expected_disp)
    assert base.mean_inverse_z_ndc.shape == (1, 1, 2, 8, 8)
    # Cell centres u = 1, 3, …, 15 of a 16-pixel image: x = 2u/16 − 1, x along columns, y along rows.
    centres = (torch.arange(8) * 2 + 1) * 2 / 16 - 1
    torch.testing.assert_close(base.mean_x_ndc[0, 0, 1, 5], centres)
    torch.testing.assert_close(base.mean_y_ndc[0, 0, 0, :, 2], centres)
    torch.testing.assert_close(base.scales, (1 / expected_disp) * (4 / 16))
    torch.testing.assert_close(base.colors[:, :, 1], torch.nn.functional.avg_pool2d(image, 2))
    torch.testing.assert_close(base.colors[:, :, 0], base.colors[:, :, 1])
    assert base.quaternions.flatten().tolist() == [1, 0, 0, 0] and base.opacities.tolist() == [0.5]
    torch.testing.assert_close(base.feature_input, torch.cat([image, 1 / depth_n], 1) * 2 - 1)
    assert base.feature_input[0, 3, 0, 0] == 2 * 0.01 - 1  # the far clamp


def test_inverse_softplus_inverts_softplus() -> None:
    t = torch.tensor([1e-3, 0.01, 0.5, 3.0, 15.0], dtype=torch.float64)
    torch.testing.assert_close(torch.nn.functional.softplus(inverse_softplus(t)), t)


def test_composer_at_zero_delta_returns_the_base_values() -> None:
    image, depth = _inputs()
    base = MultiLayerInitializer()(image, depth)
    g = GaussianComposer()(base, torch.zeros(1, 14, 2, 8, 8))
    n = 2 * 8 * 8
    assert g.means.shape == (1, n, 3) and g.opacities.shape == (1, n)
    d0 = base.mean_inverse_z_ndc.permute(0, 2, 3, 4, 1).reshape(1, n)
    z = 1 / (d0 + 1e-3)
    gs = base.global_scale
    torch.testing.assert_close(g.means[..., 2], z * gs, rtol=2e-6, atol=0)
    x = base.mean_x_ndc.permute(0, 2, 3, 4, 1).reshape(1, n)
    torch.testing.assert_close(g.means[..., 0], x * z * gs, rtol=2e-6, atol=1e-7)
    # scale = z/R·2·stride = z/4 here (z/384 at 1536), on all three axes
    torch.testing.assert_close(g.singular_values, (z * gs / 4)[..., None].expand(1, n, 3), rtol=2e-6, atol=0)
    assert (g.quaternions == torch.tensor([1.0, 0, 0, 0])).all()
    torch.testing.assert_close(g.opacities, torch.full((1, n), 0.5))
    colors = base.colors.clamp(0.01, 0.99).permute(0, 2, 3, 4, 1).reshape(1, n, 3)
    torch.testing.assert_close(g.colors, conventions.srgb_to_linear(colors), rtol=1e-5, atol=1e-6)
    # Gaussian index = layer·h·w + row·w + col
    assert g.means[0, 64 + 8 * 3 + 5, 2] == z[0, 64 + 8 * 3 + 5] * gs[0]


def test_composer_activations() -> None:
    image, depth = _inputs()
    base = MultiLayerInitializer()(image, depth)
    delta = torch.zeros(1, 14, 2, 8, 8)
    delta[:, 3] = 100.0  # scale factor saturates at max_scale = 10
    delta[:, 4] = -100.0  # and at min_scale = 0
    delta[:, 13] = 2.0
    delta[:, 7] = 0.5
    g = GaussianComposer()(base, delta)
    ratio = g.singular_values[0, :, 0] / GaussianComposer()(base, torch.zeros_like(delta)).singular_values[0, :, 0]
    torch.testing.assert_close(ratio, torch.full_like(ratio, 10.0))
    assert (g.singular_values[0, :, 1] < 1e-30).all()
    torch.testing.assert_close(g.opacities, torch.sigmoid(torch.tensor(2.0)).expand_as(g.opacities))
    assert (g.quaternions[0, :, 1] == 0.5).all()  # not normalised here
