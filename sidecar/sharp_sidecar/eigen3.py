"""Closed-form eigen-decomposition of batches of symmetric 3x3 matrices (the covariances' factors, spec §6).

Vectorised over the batch with no Python loop and no LAPACK call, so it runs on any device (float64 where
the device has it); gaussians.decompose_covariances uses it, and torch.linalg.eigh is its reference.
"""

from __future__ import annotations

import math

import torch


def decomposition_dtype(device: torch.device) -> torch.dtype:
    """float64 wherever the device supports it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


Vec = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # a batch of 3-vectors as three (…,) components


def _dot(a: Vec, b: Vec) -> torch.Tensor:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Vec, b: Vec) -> Vec:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _normalise(a: Vec) -> Vec:
    """Unit vectors; rescaled by the largest component first so tiny inputs do not underflow. Zero -> x axis."""
    big = torch.maximum(torch.maximum(a[0].abs(), a[1].abs()), a[2].abs())
    zero = big == 0
    inv_big = torch.where(zero, torch.ones_like(big), big).reciprocal()
    b = (torch.where(zero, torch.ones_like(big), a[0] * inv_big), a[1] * inv_big, a[2] * inv_big)
    inv = _dot(b, b).rsqrt()
    return (b[0] * inv, b[1] * inv, b[2] * inv)


def _select(mask: torch.Tensor, a: Vec, b: Vec) -> Vec:
    return (torch.where(mask, a[0], b[0]), torch.where(mask, a[1], b[1]), torch.where(mask, a[2], b[2]))


def symmetric_eigen(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form eigen-decomposition of symmetric (…, 3, 3) matrices, vectorised over the batch.

    1. Trigonometric (Smith) eigenvalue estimates pick the extreme eigenvalue farther from the middle one.
    2. Its eigenvector is the longest cross product of two rows of A − λI (well defined: λ is isolated), and
       its eigenvalue the Rayleigh quotient.
    3. The other two come from the exact 2×2 problem in the orthogonal complement (stable half-angle formula),
       which stays accurate for small eigenvalues next to a large one and for repeated ones.

    Returns:
        eigenvalues (…, 3) descending and eigenvectors as columns (…, 3, 3), orthonormal with det +1.
    """
    # Scale to max |a_ij| = 1 so squares and cubes neither overflow nor underflow.
    scale = A.abs().amax(dim=(-1, -2)).clamp(min=torch.finfo(A.dtype).tiny)
    B = A / scale[..., None, None]
    a, b, c = B[..., 0, 0], B[..., 1, 1], B[..., 2, 2]
    d, e, f = B[..., 0, 1], B[..., 0, 2], B[..., 1, 2]

    # Step 1: estimates. C = (B − qI)/p has eigenvalues 2cos(φ + 2πk/3) with cos 3φ = det(C)/2.
    q = (a + b + c) / 3
    aq, bq, cq = a - q, b - q, c - q
    p = ((aq.square() + bq.square() + cq.square() + 2 * (d.square() + e.square() + f.square())) / 6).sqrt()
    det_c = aq * (bq * cq - f * f) - d * (d * cq - f * e) + e * (d * f - bq * e)
    p3 = 2 * p**3
    # Isotropic (p = 0, or p³ below the dtype's range): any φ gives the right (equal) eigenvalues.
    r = torch.where(p3 > 0, det_c / p3.clamp(min=torch.finfo(A.dtype).tiny), torch.zeros_like(p)).clamp(-1.0, 1.0)
    phi = torch.acos(r) / 3
    lam_hi = q + 2 * p * torch.cos(phi)
    lam_lo = q + 2 * p * torch.cos(phi + 2 * math.pi / 3)
    lam_mid = 3 * q - lam_hi - lam_lo
    largest_first = (lam_hi - lam_mid) >= (lam_mid - lam_lo)
    lam = torch.where(largest_first, lam_hi, lam_lo)

    # Step 2: the isolated eigenvector from the rows of B − λI.
    rows = ((a - lam, d, e), (d, b - lam, f), (e, f, c - lam))
    crosses = (_cross(rows[0], rows[1]), _cross(rows[0], rows[2]), _cross(rows[1], rows[2]))
    n0, n1, n2 = (_dot(x, x) for x in crosses)
    v = _select(n0 >= torch.maximum(n1, n2), crosses[0], _select(n1 >= n2, crosses[1], crosses[2]))
    v = _normalise(v)
    Bv = (a * v[0] + d * v[1] + e * v[2], d * v[0] + b * v[1] + f * v[2], e * v[0] + f * v[1] + c * v[2])
    lam_iso = _dot(v, Bv)

    # Step 3: orthonormal basis (u, w) of v⊥, then the 2×2 problem [[m00, m01], [m01, m11]] in it.
    zero = torch.zeros_like(a)
    u = _normalise(_select(v[0].abs() > v[2].abs(), (-v[1], v[0], zero), (zero, -v[2], v[1])))
    w = _cross(v, u)
    Bu = (a * u[0] + d * u[1] + e * u[2], d * u[0] + b * u[1] + f * u[2], e * u[0] + f * u[1] + c * u[2])
    Bw = (a * w[0] + d * w[1] + e * w[2], d * w[0] + b * w[1] + f * w[2], e * w[0] + f * w[1] + c * w[2])
    m00, m01, m11 = _dot(u, Bu), _dot(u, Bw), _dot(w, Bw)
    mean, half = (m00 + m11) / 2, (m00 - m11) / 2
    radius = torch.hypot(half, m01)
    mu_hi, mu_lo = mean + radius, mean - radius
    theta = torch.atan2(m01, half) / 2  # direction of mu_hi in the (u, w) plane; any angle if repeated
    cos_t, sin_t = torch.cos(theta), torch.sin(theta)
    x_hi = (cos_t * u[0] + sin_t * w[0], cos_t * u[1] + sin_t * w[1], cos_t * u[2] + sin_t * w[2])

    lam0 = torch.where(largest_first, lam_iso, mu_hi)
    lam1 = torch.where(largest_first, mu_hi, mu_lo)
    lam2 = torch.where(largest_first, mu_lo, lam_iso)
    # Rounding can swap nearly equal values; keep the order (values move by rounding error only).
    lam1 = torch.maximum(lam1, lam2)
    lam0 = torch.maximum(lam0, lam1)
    e0 = _select(largest_first, v, x_hi)
    e1 = _select(largest_first, x_hi, _cross(v, x_hi))  # v × x_hi is the mu_lo direction (unit: v ⊥ x_hi)
    e2 = _cross(e0, e1)  # right-handed, det +1
    vectors = torch.stack([torch.stack(e0, -1), torch.stack(e1, -1), torch.stack(e2, -1)], dim=-1)
    eigenvalues = torch.stack([lam0, lam1, lam2], -1) * scale[..., None]
    return eigenvalues, vectors
