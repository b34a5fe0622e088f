"""Residual, fusion and multi-resolution decoder blocks against their formulas (spec §4.1.3, §4.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sharp_sidecar.model.decoder import (
    FeatureFusionBlock2d,
    MultiresConvDecoder,
    group_norm_residual_block,
    relu_residual_block,
)
from sharp_sidecar.model.monodepth import disparity_head, disparity_to_depth


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_relu_residual_block_keeps_the_unactivated_identity() -> None:
    block = relu_residual_block(4)
    _randomise(block)
    x = torch.randn(1, 4, 6, 6)
    conv1, conv2 = block.residual[1], block.residual[3]
    expected = x + conv2(F.relu(conv1(F.relu(x))))
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
    assert sorted(k for k in block.state_dict()) == [
        "residual.1.bias", "residual.1.weight", "residual.3.bias", "residual.3.weight"
    ]  # fmt: skip


def test_group_norm_residual_block_and_shortcut() -> None:
    block = group_norm_residual_block(8, 4, 16, num_groups=4)
    _randomise(block, 1)
    x = torch.randn(2, 8, 5, 5)
    r = block.residual
    h = r[2](F.relu(F.group_norm(x, 4, r[0].weight, r[0].bias, eps=1e-5)))
    h = r[5](F.relu(F.group_norm(h, 4, r[3].weight, r[3].bias, eps=1e-5)))
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.shortcut(x) + h)
    assert isinstance(block.shortcut, torch.nn.Conv2d)
    assert isinstance(group_norm_residual_block(8, 4, 8, 4).shortcut, torch.nn.Identity)


def test_fusion_block_formula() -> None:
    fusion = FeatureFusionBlock2d(4, upsample=True)
    _randomise(fusion, 2)
    x, skip = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    with torch.no_grad():
        y = fusion.out_conv(fusion.deconv(fusion.resnet2(x + fusion.resnet1(skip))))
        torch.testing.assert_close(fusion(x, skip), y)
        assert fusion(x).shape == (1, 4, 6, 6)
        torch.testing.assert_close(fusion(x), fusion.out_conv(fusion.deconv(fusion.resnet2(x))))
    assert fusion.deconv.bias is None
    plain = FeatureFusionBlock2d(4, upsample=False)
    assert isinstance(plain.deconv, torch.nn.Identity)
    assert not any(k.startswith("deconv") for k in plain.state_dict())


def test_multires_decoder_order_and_keys() -> None:
    dims = (4, 4, 8, 16, 16)
    decoder = MultiresConvDecoder(dims, 4)
    _randomise(decoder, 3)
    assert isinstance(decoder.convs[0], torch.nn.Identity)  # no convs.0 key when widths match
    assert not any(k.startswith("convs.0") for k in decoder.state_dict())
    assert "convs.0.weight" in MultiresConvDecoder(dims, 8).state_dict()
    e = [torch.randn(1, d, 32 >> k, 32 >> k) for k, d in enumerate(dims)]
    with torch.no_grad():
        y = decoder.fusions[4](decoder.convs[4](e[4]))
        for i in (3, 2, 1, 0):
            y = decoder.fusions[i](y, decoder.convs[i](e[i]))
        torch.testing.assert_close(decoder(e), y)
    assert y.shape == (1, 4, 32, 32)


def test_disparity_head_and_depth() -> None:
    head = disparity_head(16, 2)
    assert [k for k in head.state_dict() if k.endswith("weight")] == ["0.weight", "1.weight", "2.weight", "4.weight"]
    with torch.no_grad():
        out = head(torch.randn(1, 16, 8, 8))
    assert out.shape == (1, 2, 16, 16) and (out >= 0).all()
    disparity = torch.tensor([0.0, 1e-5, 0.5, 2e4]).view(1, 1, 2, 2)
    depth = disparity_to_depth(disparity, torch.tensor([0.8]))
    torch.testing.assert_close(depth.flatten(), torch.tensor([0.8 / 1e-4, 0.8 / 1e-4, 1.6, 0.8 / 1e4]))
