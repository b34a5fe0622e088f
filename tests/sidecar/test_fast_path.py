"""The fast path on the CPU: bf16 weights and activations with float32 islands, GroupNorm rewrite, policies.

The real check (full model, compiled, on an H100, with render PSNR) is `sharp bench` on the GPU machine; its
figures are in docs/performance-notes.md. Here the tiny preset runs the same code in bf16 on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sharp_sidecar.cli.bench_reference import reference_state_dict, relative_errors
from sharp_sidecar.inference import fastpath
from sharp_sidecar.inference.pipeline import predict
from sharp_sidecar.inference.precision import DEFAULT, get_precision, resolve_precision
from sharp_sidecar.model import create_predictor, vit
from torch import nn


@pytest.fixture(scope="module")
def tiny_state_dict() -> dict[str, torch.Tensor]:
    return reference_state_dict("tiny")


def _photo(seed: int, width: int = 96, height: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (height // 8, width // 8, 3))
    smooth = np.kron(base, np.ones((8, 8, 1)))  # blocks, so the colours have structure beyond noise
    return np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("affine", [True, False])
def test_channel_group_norm_matches_group_norm(layout: str, affine: bool) -> None:
    torch.manual_seed(1)
    norm = nn.GroupNorm(4, 16, eps=1e-5, affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.normal_()
            norm.bias.normal_()
    # A large mean next to a small spread: the two-pass variance must not cancel.
    x = torch.randn(2, 16, 11, 7) * 0.5 + 40.0
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        # float64 reference: torch's own float32 channels_last kernel loses ~2e-4 here (one-pass variance).
        expected = norm.double()(x.double())
        got = fastpath.ChannelGroupNorm(norm.float())(x)
    assert got.dtype == x.dtype
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=2e-5)


def test_channel_group_norm_in_bf16_rounds_like_bf16() -> None:
    torch.manual_seed(2)
    norm = nn.GroupNorm(2, 8)
    x = torch.randn(1, 8, 16, 16)
    with torch.no_grad():
        expected = norm(x)
        got = fastpath.ChannelGroupNorm(norm.to(torch.bfloat16))(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    error = float((got.float() - expected).norm() / expected.norm())
    assert 0 < error < 8e-3  # bf16 keeps 8 mantissa bits: unit roundoff 2^-9 = 2e-3 per value


def test_use_channel_group_norm_replaces_every_group_norm_and_shares_parameters() -> None:
    model = create_predictor("tiny")
    norms = [m for m in model.feature_model.modules() if isinstance(m, nn.GroupNorm)]
    weights = {id(m.weight) for m in norms}
    assert fastpath.use_channel_group_norm(model.feature_model) == len(norms) > 0
    assert not any(isinstance(m, nn.GroupNorm) for m in model.feature_model.modules())
    replaced = [m for m in model.feature_model.modules() if isinstance(m, fastpath.ChannelGroupNorm)]
    assert {id(m.weight) for m in replaced} == weights


def test_fused_kernels_keep_parameters_and_compute_the_same_function() -> None:
    import copy

    torch.manual_seed(4)
    model = create_predictor("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():  # the tiny preset's init leaves biases at zero: give every term a value
            p.add_(torch.randn_like(p) * 0.02)
    fused = copy.deepcopy(model)
    counts = fastpath.use_fused_kernels(fused)
    mlps = sum(isinstance(m, vit.Mlp) for m in model.modules())
    assert counts["mlp"] == mlps > 0 and counts["conv_relu"] > 0
    assert counts["patch_embed"] == 2 and counts["conv_transpose"] > 0
    assert not any(fastpath.use_fused_kernels(fused).values())  # idempotent
    assert not any(isinstance(m, vit.Mlp) for m in fused.modules())
    before, after = model.state_dict(), fused.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

    image = torch.rand(1, 3, model.config.resolution, model.config.resolution)
    factor = torch.tensor([0.9])
    with torch.no_grad():
        ref, got = model(image, factor), fused(image, factor)
    errors = relative_errors(got, ref)
    # Same function up to GELU's tanh form on CUDA (|Δ| <= 5e-4 per activation; the CPU's is exact); a dropped
    # bias or ReLU moves the outputs by >= 1e-2.
    assert max(errors.values()) < 2e-3


def test_fused_modules_against_their_formulas() -> None:
    torch.manual_seed(5)
    conv = nn.Conv2d(6, 5, 3, padding=1)
    x = torch.randn(2, 6, 9, 7)
    with torch.no_grad():
        assert torch.equal(fastpath.Conv2dReLU(conv)(x), torch.relu(conv(x)))
        mlp = vit.Mlp(8, 32)
        tokens = torch.randn(2, 5, 8)
        exact = mlp(tokens)
        tanh_form = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(tokens), approximate="tanh"))
        got = fastpath.GeluEpilogueMlp(mlp)(tokens)
    # cuBLASLt's epilogue is GELU's tanh form, torch's CPU kernel the exact one: either, and nothing else.
    assert float((tanh_form - exact).abs().max()) > 1e-5
    assert torch.allclose(got, exact, atol=1e-6) or torch.allclose(got, tanh_form, atol=1e-6)
    with pytest.raises(ValueError, match="bias"):
        fastpath.Conv2dReLU(nn.Conv2d(2, 2, 3, bias=False))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gemm_patch_embed_and_bias_after_transposed_conv_are_the_convolutions(layout: torch.memory_format) -> None:
    torch.manual_seed(6)
    embed = vit.PatchEmbed(4, 10).to(memory_format=layout)  # type: ignore[call-overload]
    x = torch.randn(3, 3, 16, 12).to(memory_format=layout)
    deconv = nn.ConvTranspose2d(5, 7, 2, stride=2).to(memory_format=layout)  # type: ignore[call-overload]
    maps = torch.randn(2, 5, 6, 4).to(memory_format=layout)
    with torch.no_grad():
        got, expected = fastpath.GemmPatchEmbed(embed)(x), embed(x)
        assert got.shape == expected.shape == (3, 12, 10)
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.allclose(fastpath.ConvTranspose2dBiasAfter(deconv)(maps), deconv(maps), atol=1e-6)
    with pytest.raises(ValueError, match="non-overlapping"):
        fastpath.GemmPatchEmbed(_overlapping_embed())


def _overlapping_embed() -> vit.PatchEmbed:
    embed = vit.PatchEmbed(4, 10)
    embed.proj = nn.Conv2d(3, 10, 4, stride=2)
    return embed


def test_load_predictor_bf16_channels_last(tiny_state_dict: dict[str, torch.Tensor]) -> None:
    model = fastpath.load_predictor(tiny_state_dict, torch.device("cpu"), get_precision("bf16-eager"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    key = "feature_model.fusion.out_conv.weight"
    assert torch.equal(model.state_dict()[key].float(), tiny_state_dict[key].to(torch.bfloat16).float())


def test_bf16_path_matches_fp32_within_bf16_tolerance(tiny_state_dict: dict[str, torch.Tensor]) -> None:
    cpu = torch.device("cpu")
    fp32 = fastpath.load_predictor(tiny_state_dict, cpu, DEFAULT)
    bf16_policy = get_precision("bf16-eager")
    bf16 = fastpath.load_predictor(tiny_state_dict, cpu, bf16_policy)
    seen: dict[str, torch.dtype] = {}

    def observe(name: str, t: torch.Tensor) -> None:
        seen[name] = t.dtype

    for seed in (0, 1):  # fresh inputs: the same function on any photo, not one lucky case
        photo = _photo(seed)
        ref = predict(fp32, photo, 90.0, precision=DEFAULT).gaussians
        fast = predict(bf16, photo, 90.0, precision=bf16_policy, observe=observe).gaussians
        for name in ("means", "singular_values", "quaternions", "colors", "opacities"):
            value = getattr(fast, name)
            assert value.dtype == torch.float32 and torch.isfinite(value).all(), name
        errors = relative_errors(fast, ref)
        # Tolerances: bf16's unit roundoff is 2e-3; through ~20 layers the tiny preset's outputs move by
        # 1e-3..4e-2 (measured: means 1.1e-2, covariances 3.5e-2, colours 5e-4, opacities 4e-3), and the full
        # model on the GPU by 5e-2 / 8e-2 / 3e-4 / 2e-3 with renders >= 40 dB. A bound ~3x the measured value
        # catches a float32 island gone to bf16 (colours through bf16 alone would be ~2e-3).
        assert 0 < errors["means"] < 4e-2
        assert 0 < errors["covariances"] < 1.2e-1
        assert 0 < errors["colors"] < 2e-3
        assert 0 < errors["opacities"] < 1.5e-2
    # The network runs in bf16; depth inversion, the initializer and the composer in float32.
    assert seen["e0"] == torch.bfloat16 and seen["disparity"] == torch.bfloat16
    assert seen["depth"] == torch.float32 and seen["delta"] == torch.float32
    assert seen["base_colors"] == torch.float32 and seen["feature_input"] == torch.float32


def test_resolve_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHARP_PRECISION", raising=False)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).name == "fp32"
    assert resolve_precision(None, cpu).name == "fp32"
    assert resolve_precision("fp32", cpu).name == "fp32"
    compiled_on_cpu = resolve_precision("bf16", cpu)
    assert compiled_on_cpu.dtype == torch.bfloat16 and not compiled_on_cpu.compile
    monkeypatch.setenv("SHARP_PRECISION", "bf16-eager")
    assert resolve_precision("auto", cpu).name == "bf16-eager"
    assert resolve_precision("fp32", cpu).name == "fp32"  # an explicit choice beats the environment
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int8", cpu)


def test_prepare_is_a_no_op_off_cuda() -> None:
    model = create_predictor("tiny")
    bf16 = get_precision("bf16")
    assert fastpath.prepare(model, bf16) == (bf16, 0.0)
    assert not getattr(model, "_sharp_compiled", False)


def test_prepare_falls_back_to_eager_when_compiling_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_predictor("tiny")
    monkeypatch.setattr(fastpath, "_on_cuda", lambda m: True)
    monkeypatch.setattr(fastpath, "use_compile_cache", lambda: None)

    def broken_warm_up(*args: object, **kwargs: object) -> float:
        raise RuntimeError("Cannot find a working triton installation")

    monkeypatch.setattr(fastpath, "warm_up", broken_warm_up)
    stages: list[str] = []
    policy, seconds = fastpath.prepare(model, get_precision("bf16"), lambda stage, f, m: stages.append(stage))
    assert stages == ["compile"] and seconds >= 0
    assert policy.dtype == torch.bfloat16 and not policy.compile
    assert not getattr(model, "_sharp_compiled", True)
    units = [*fastpath.compiled_units(model), model.init_model, model.gaussian_composer]
    assert all(unit._compiled_call_impl is None for unit in units)
    # The model still runs eagerly, with the GroupNorm rewrite in place.
    assert not any(isinstance(m, nn.GroupNorm) for m in model.feature_model.modules())
    photo = _photo(5)
    assert torch.isfinite(predict(model, photo, 90.0, precision=DEFAULT).gaussians.means).all()


def test_cache_dir_honours_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SHARP_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    folder = fastpath.use_compile_cache()
    assert folder == tmp_path / "c" / "compile" and folder.is_dir()
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(str(folder))


def test_unproject_tensors_is_the_closed_form() -> None:
    """The function the fast path compiles computes exactly what ``unproject`` does eagerly."""
    from dataclasses import replace

    from sharp_sidecar.gaussians import Gaussians, _unproject_tensors, covariances, unproject, unprojection_matrix

    g = torch.Generator().manual_seed(3)
    n = 3000
    ndc = Gaussians(
        torch.rand(1, n, 3, generator=g) + 1, torch.rand(1, n, 3, generator=g) * 0.01 + 1e-4,
        torch.randn(1, n, 4, generator=g), torch.rand(1, n, 3, generator=g), torch.rand(1, n, generator=g),
    )  # fmt: skip
    ref = unproject(ndc, 500.0, (640, 480))
    diagonal = unprojection_matrix(500.0, (640, 480)).diagonal()
    means, scales, quats = _unproject_tensors(ndc.means, ndc.singular_values, ndc.quaternions, diagonal)
    assert torch.equal(means, ref.means)
    # Element-wise A·Σ·Aᵀ rounds differently from the batched matmul, so compare the covariances they factor:
    # equal to float32 rounding of Σ (a tiny scale next to a large one moves by more, relatively, on both paths).
    mine = covariances(replace(ref, singular_values=scales, quaternions=quats)).double()
    theirs = covariances(ref).double()
    error = (mine - theirs).flatten(-2).norm(dim=-1) / theirs.flatten(-2).norm(dim=-1)
    assert float(error.max()) < 1e-6
    assert torch.allclose(scales, ref.singular_values, rtol=1e-3, atol=0)
