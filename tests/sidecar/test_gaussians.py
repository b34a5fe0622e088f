"""Unprojection, covariance decomposition and PLY export against float64 numpy references (spec §6, §8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sharp_sidecar.gaussians import (
    Gaussians,
    covariances,
    decompose_covariances,
    disparity_quantiles,
    matrix_to_quaternion,
    quaternion_to_matrix,
    save_ply,
    unproject,
    vertex_columns,
)
from sharp_sidecar.io import conventions, ply


def _rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    return q  # orthogonal, det ±1 (about half are reflections)


def _test_covariances() -> np.ndarray:
    """Random SPD matrices (float32) with hard cases: reflections, isotropic, repeated and tiny eigenvalues."""
    rng = np.random.default_rng(0)
    n = 4000
    Q = _rotations(n, rng)
    s = np.exp(rng.normal(scale=1.5, size=(n, 3)))
    s[:500] = 0.3  # exactly isotropic
    s[500:1000, 1] = s[500:1000, 0]  # two equal axes
    s[1000:1500] = 0.3 * (1 + rng.normal(scale=1e-6, size=(500, 3)))  # nearly isotropic
    s[1500:2000, 2] = s[1500:2000, 0] * 1e-3  # very flat
    cov = (Q * s[:, None, :] ** 2) @ Q.transpose(0, 2, 1)
    return cov.astype(np.float32)


@pytest.mark.parametrize("method", ["closed_form", "eigh"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_decomposition_matches_a_float64_svd(method: str, dtype: torch.dtype) -> None:
    cov32 = _test_covariances()
    cov = cov32.astype(np.float64)
    sym = (cov + cov.transpose(0, 2, 1)) / 2
    ref_s = np.sqrt(np.linalg.svd(sym, compute_uv=False))  # descending
    scales, quats = decompose_covariances(torch.from_numpy(cov32), method=method, dtype=dtype)
    scales64, quats64 = scales.double().numpy(), quats.double().numpy()
    assert scales.dtype == torch.float32 and quats.shape == (len(cov), 4)
    assert (scales64[:, 0] >= scales64[:, 1]).all() and (scales64[:, 1] >= scales64[:, 2]).all()
    assert np.abs(np.linalg.norm(quats64, axis=1) - 1).max() < 1e-6
    R = quaternion_to_matrix(torch.from_numpy(quats64)).numpy()
    assert np.abs(np.linalg.det(R) - 1).max() < 1e-6
    rebuilt = (R * scales64[:, None, :] ** 2) @ R.transpose(0, 2, 1)
    err = np.linalg.norm(rebuilt - sym, axis=(1, 2)) / np.linalg.norm(sym, axis=(1, 2))
    tol = 1e-6 if dtype == torch.float64 else 1e-5
    assert err.max() < tol
    # Variances to the working precision relative to the largest one (that is all float32 input can resolve).
    var_err = np.abs(scales64**2 - ref_s**2) / ref_s[:, :1] ** 2
    assert var_err.max() < (3e-7 if dtype == torch.float64 else 1e-6)  # float32 output rounding
    if dtype == torch.float64:
        # so scales that are not tiny next to the largest match to ~1e-7 relative (float32 output)
        ok = ref_s[:, 2] > 1e-2 * ref_s[:, 0]
        assert (np.abs(scales64 - ref_s) / ref_s)[ok].max() < 1e-6


def test_quaternion_matrix_round_trip() -> None:
    rng = np.random.default_rng(1)
    q = torch.from_numpy(rng.normal(size=(1000, 4)))
    q[:10] = torch.tensor([1.0, 0, 0, 0])
    q[10:20] = torch.tensor([0.0, 1, 0, 0])  # 180° turns: w = 0
    R = quaternion_to_matrix(q)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=R.dtype).expand_as(R), atol=1e-12)
    back = matrix_to_quaternion(R)
    unit = q / q.norm(dim=-1, keepdim=True)
    same = torch.minimum((back - unit).abs().amax(-1), (back + unit).abs().amax(-1))
    assert same.max() < 1e-12
    assert (back[:, 0] >= 0).all()
    # the formula R = (w² − |v|²)I + 2vvᵀ + 2w[v]× for one case by hand
    w, x, y, z = (unit[20] ** 1).tolist()
    v = np.array([x, y, z])
    skew = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    expected = (w * w - v @ v) * np.eye(3) + 2 * np.outer(v, v) + 2 * w * skew
    np.testing.assert_allclose(R[20].numpy(), expected, atol=1e-12)


def _random_gaussians(n: int = 2000, seed: int = 2) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    z = 1 + 20 * torch.rand(1, n, generator=g)
    xy = 2 * torch.rand(1, n, 2, generator=g) - 1
    return Gaussians(
        means=torch.cat([xy * z[..., None], z[..., None]], -1),
        singular_values=torch.exp(torch.randn(1, n, 3, generator=g) - 3),
        quaternions=torch.randn(1, n, 4, generator=g) * 3,  # unnormalised, as from the composer
        colors=torch.rand(1, n, 3, generator=g) * 0.98 + 0.01,
        opacities=torch.rand(1, n, generator=g) * 0.98 + 0.01,
    )


def test_unproject_against_numpy() -> None:
    ndc = _random_gaussians()
    f_px, (W, H) = 500.0, (640, 480)
    metric = unproject(ndc, f_px, (W, H))
    A = np.diag([W / (2 * f_px), H / (2 * f_px), 1.0])
    np.testing.assert_allclose(metric.means[0].numpy(), ndc.means[0].double().numpy() @ A.T, rtol=1e-6)
    q = ndc.quaternions[0].double().numpy()
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    R = quaternion_to_matrix(torch.from_numpy(q)).numpy()
    s = ndc.singular_values[0].double().numpy()
    ref_cov = A @ ((R * s[:, None, :] ** 2) @ R.transpose(0, 2, 1)) @ A.T
    ours_cov = covariances(metric)[0].double().numpy()
    err = np.linalg.norm(ours_cov - ref_cov, axis=(1, 2)) / np.linalg.norm(ref_cov, axis=(1, 2))
    assert err.max() < 2e-6
    ms = metric.singular_values[0]
    assert (ms[:, 0] >= ms[:, 1]).all() and (ms[:, 1] >= ms[:, 2]).all()
    assert torch.equal(metric.colors, ndc.colors) and torch.equal(metric.opacities, ndc.opacities)


def test_vertex_columns_and_disparity() -> None:
    g = unproject(_random_gaussians(), 500.0, (640, 480))
    vertex = vertex_columns(g)
    assert vertex.dtype.names == ply.SHARP_VERTEX_PROPERTIES
    colors = g.colors[0].double().numpy()
    f_dc = (conventions.linear_to_srgb(colors) - 0.5) / conventions.SH_C0
    np.testing.assert_allclose(np.stack([vertex[f"f_dc_{i}"] for i in range(3)], 1), f_dc, rtol=1e-5, atol=1e-5)
    o = g.opacities[0].double().numpy()
    np.testing.assert_allclose(vertex["opacity"], np.log(o / (1 - o)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vertex["scale_1"], np.log(g.singular_values[0, :, 1].numpy()), rtol=1e-6)
    np.testing.assert_array_equal(vertex["rot_0"], g.quaternions[0, :, 0].numpy())
    np.testing.assert_array_equal(vertex["z"], g.means[0, :, 2].numpy())
    inverse_z = 1 / g.means[0, :, 2].numpy()
    np.testing.assert_allclose(disparity_quantiles(g), np.quantile(inverse_z, [0.1, 0.9]), rtol=1e-6)


def test_save_ply_with_and_without_metadata(tmp_path: Path) -> None:
    g = unproject(_random_gaussians(5), 500.0, (640, 480))
    path = tmp_path / "a.ply"
    save_ply(g, path, 500.0, (640, 480))
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n") + len(b"end_header\n")]
    assert len(header) == 664  # the reference header for N = 5 (spec §8)
    assert len(raw) == 664 + 56 * 5 + 64 + 36 + 8 + 8 + 8 + 1 + 3
    contents = ply.read_ply(path)
    assert list(contents.elements) == ["vertex", *(n for n, _ in ply.sharp_metadata(1, (1, 1), 1, [0, 0]))]
    assert contents.elements["image_size"]["image_size"].tolist() == [640, 480]
    np.testing.assert_allclose(contents.elements["intrinsic"]["intrinsic"], [500, 0, 320, 0, 500, 240, 0, 0, 1])
    plain = tmp_path / "b.ply"
    save_ply(g, plain, 500.0, (640, 480), plain=True)
    contents = ply.read_ply(plain)
    assert list(contents.elements) == ["vertex"]
    np.testing.assert_array_equal(contents.elements["vertex"], vertex_columns(g))
