from __future__ import annotations

import numpy as np
import torch
from sharp_sidecar.io import conventions as cv


def test_torch_and_numpy_give_the_same_colour_conversions() -> None:
    x = torch.linspace(-0.1, 1.1, 2001, dtype=torch.float32)
    for fn in (cv.srgb_to_linear, cv.linear_to_srgb, cv.sigmoid):
        out = fn(x)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), fn(x.numpy()), rtol=2e-6, atol=1e-7)


def test_sidecar_links_the_addon_definition() -> None:
    from sharp_blender.io import conventions as addon_cv

    assert open(cv.__file__).read() == open(addon_cv.__file__).read()
