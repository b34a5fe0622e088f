"""The whole predictor on the tiny preset: shapes, determinism, observers, config validation."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from sharp_sidecar.model import PRESETS, create_predictor, get_config
from sharp_sidecar.model.config import PredictorConfig


def test_tiny_forward_shapes_and_ranges() -> None:
    model = create_predictor("tiny")
    config = model.config
    assert config.num_gaussians == 2 * 256 * 256
    image = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    seen: dict[str, tuple[int, ...]] = {}
    with torch.no_grad():
        g = model(image, torch.tensor([0.9]), observe=lambda n, t: seen.setdefault(n, tuple(t.shape)))
        again = model(image, torch.tensor([0.9]))
    n = config.num_gaussians
    assert g.means.shape == (1, n, 3) and g.singular_values.shape == (1, n, 3)
    assert g.quaternions.shape == (1, n, 4) and g.colors.shape == (1, n, 3) and g.opacities.shape == (1, n)
    assert ((g.opacities > 0) & (g.opacities < 1)).all() and (g.means[..., 2] > 0).all()
    assert ((g.colors > 0) & (g.colors < 1)).all()
    torch.testing.assert_close(g.means, again.means, rtol=0, atol=0)  # observing changes nothing
    assert seen["disparity"] == (1, 2, 512, 512)
    assert seen["delta"] == (1, 14, 2, 256, 256)
    assert seen["feature_input"] == (1, 5, 512, 512)
    assert seen["texture_features"] == (1, 8, 256, 256)
    assert seen["e0"] == (1, 16, 256, 256)


def test_input_shape_is_checked() -> None:
    model = create_predictor("tiny")
    with pytest.raises(ValueError, match=r"\(B, 3, 512, 512\)"):
        model.encode(torch.zeros(1, 3, 500, 512))


def test_presets_and_validation() -> None:
    assert get_config("default") == PredictorConfig()
    assert get_config("tiny").vit_grid == 8
    with pytest.raises(ValueError, match="unknown predictor preset 'huge'"):
        get_config("huge")
    with pytest.raises(ValueError, match="64 x the token grid"):
        replace(PRESETS["tiny"], vit_patch=8)
    with pytest.raises(ValueError, match="vit_taps"):
        replace(PRESETS["tiny"], vit_taps=(0, 5))
    assert PRESETS["default"].vit_taps[:2] == (5, 11)


def test_disabled_parts_are_identity_modules() -> None:
    model = create_predictor("tiny")
    assert isinstance(model.feature_model.upsample, torch.nn.Identity)
    # As in the default: level 0 of the monodepth decoder needs no projection, the Gaussian decoder's does.
    assert isinstance(model.monodepth_model.monodepth_predictor.decoder.convs[0], torch.nn.Identity)
    assert "feature_model.decoder.convs.0.weight" in model.state_dict()
    assert "monodepth_model.monodepth_predictor.decoder.convs.0.weight" not in model.state_dict()
