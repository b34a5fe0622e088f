"""ViT blocks against hand-written formulas (spec §4.1.1), on small widths."""

from __future__ import annotations

import math

import torch
from sharp_sidecar.model.vit import LAYER_NORM_EPS, Block, VisionTransformer


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + LAYER_NORM_EPS) * weight + bias


def _block_by_hand(block: Block, x: torch.Tensor, heads: int) -> torch.Tensor:
    n, tokens, dim = x.shape
    hd = dim // heads
    h = _layer_norm(x, block.norm1.weight, block.norm1.bias)
    qkv = h @ block.attn.qkv.weight.T + block.attn.qkv.bias
    q, k, v = qkv.split(dim, dim=-1)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(n, tokens, heads, hd).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(n, tokens, dim)
    x = x + block.ls1.gamma * (out @ block.attn.proj.weight.T + block.attn.proj.bias)
    h = _layer_norm(x, block.norm2.weight, block.norm2.bias)
    hidden = h @ block.mlp.fc1.weight.T + block.mlp.fc1.bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact GELU
    return x + block.ls2.gamma * (hidden @ block.mlp.fc2.weight.T + block.mlp.fc2.bias)


def test_block_matches_the_attention_and_mlp_formulas() -> None:
    block = Block(dim=32, num_heads=4, mlp_ratio=4.0)
    _randomise(block)
    x = torch.randn(3, 17, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(block(x), _block_by_hand(block, x, heads=4), rtol=1e-5, atol=1e-5)


def test_vit_embedding_taps_and_feature_map() -> None:
    vit = VisionTransformer(img_size=32, patch=8, dim=16, depth=3, num_heads=2, mlp_ratio=2.0, num_classes=5)
    _randomise(vit, seed=2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        final, taps = vit.forward_intermediates(x, (0, 2))
        # By hand: patches row-major, class token first, position added to all 17 tokens.
        patches = x.unfold(2, 8, 8).unfold(3, 8, 8)  # (n, 3, 4, 4, 8, 8)
        flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 16, 3 * 64)
        tokens = flat @ vit.patch_embed.proj.weight.reshape(16, -1).T + vit.patch_embed.proj.bias
        t = torch.cat([vit.cls_token.expand(2, -1, -1), tokens], 1) + vit.pos_embed
        expected_taps = []
        for i, block in enumerate(vit.blocks):
            t = block(t)
            if i in (0, 2):
                expected_taps.append(t)
        torch.testing.assert_close(taps[0], expected_taps[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(taps[1], expected_taps[1], rtol=1e-5, atol=1e-5)
        # Taps are pre-norm; the output is the final LayerNorm of the last residual stream.
        torch.testing.assert_close(final, _layer_norm(t, vit.norm.weight, vit.norm.bias), rtol=1e-5, atol=1e-5)
        fmap = vit.to_feature_map(final)
    assert fmap.shape == (2, 16, 4, 4)
    # Token 1 + r*4 + c lands at row r, column c.
    torch.testing.assert_close(fmap[:, :, 2, 3], final[:, 1 + 2 * 4 + 3])


def test_classifier_head_is_never_applied() -> None:
    vit = VisionTransformer(img_size=16, patch=8, dim=8, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=7)
    calls = []
    vit.head.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        out = vit(torch.randn(1, 3, 16, 16))
    assert out.shape == (1, 5, 8) and not calls
