"""Gaussians: the predictor's output, unprojection to metric OpenCV camera space (spec §6), PLY export (§8).

The reference decomposes the metric covariances with a float64 SVD on the CPU (~3 s for 1.18 M Gaussians).
Here a batched symmetric eigen-decomposition runs on the model's device instead (float64 where the device
has it); for a symmetric positive semi-definite matrix it gives the same factors: eigenvalues = SVD singular
values, eigenvectors = U. Scales come out sorted descending and rotations proper (det +1), as upstream.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from .eigen3 import decomposition_dtype, symmetric_eigen
from .io import conventions, ply

logger = logging.getLogger(__name__)


@dataclass
class Gaussians:
    """A batch of 3D Gaussians (all float32, batch first).

    Attributes:
        means: (B, N, 3) positions; metric [m] in the OpenCV camera frame (x right, y down, z forward) after
            :func:`unproject`, (x_ndc·z, y_ndc·z, z) before.
        singular_values: (B, N, 3) linear standard deviations [m] (not log); sorted descending after unprojection.
        quaternions: (B, N, 4) rotations, w first; raw (unnormalised) before unprojection, unit after.
        colors: (B, N, 3) linear RGB in (0, 1).
        opacities: (B, N) probabilities in (0, 1).
    """

    means: torch.Tensor
    singular_values: torch.Tensor
    quaternions: torch.Tensor
    colors: torch.Tensor
    opacities: torch.Tensor

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[1])

    def to(self, device: torch.device | str) -> Gaussians:
        return Gaussians(*(t.to(device) for t in self._fields()))

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return (self.means, self.singular_values, self.quaternions, self.colors, self.opacities)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(…, 4) quaternions (w first, normalised here) -> (…, 3, 3) rotations R = (w²−|v|²)I + 2vvᵀ + 2w[v]×."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = (
        (w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z),
    )
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """(…, 3, 3) proper rotations -> (…, 4) unit quaternions, w first, w ≥ 0 (Shepperd's branch choice)."""
    m = R
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Four candidate solutions, each accurate where its leading component is the largest.
    candidates = torch.stack(
        [
            torch.stack(
                [1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1
            ),
            torch.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    1 + 2 * m[..., 0, 0] - trace,
                    m[..., 0, 1] + m[..., 1, 0],
                    m[..., 0, 2] + m[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 0, 1] + m[..., 1, 0],
                    1 + 2 * m[..., 1, 1] - trace,
                    m[..., 1, 2] + m[..., 2, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 1, 2] + m[..., 2, 1],
                    1 + 2 * m[..., 2, 2] - trace,
                ],
                -1,
            ),
        ],
        dim=-2,
    )  # (…, 4 candidates, 4 components); candidate k has 4·q_k² in component k
    diag = torch.stack(
        [1 + trace, 1 + 2 * m[..., 0, 0] - trace, 1 + 2 * m[..., 1, 1] - trace, 1 + 2 * m[..., 2, 2] - trace], -1
    )
    best = diag.argmax(dim=-1, keepdim=True)
    q = torch.gather(candidates, -2, best[..., None].expand(*best.shape, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


_CHUNK = 1 << 16  # Gaussians per closed-form batch: keeps the ~100 temporaries in cache (10x faster on CPU)


def decompose_covariances(
    cov: torch.Tensor, method: str = "closed_form", dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Covariances (…, 3, 3) -> (singular values (…, 3) descending, unit quaternions (…, 4), w first).

    The input is symmetrised first: a float32 A·Σ·Aᵀ is symmetric only up to rounding, and the symmetric part
    has the SVD's singular values to second order. Runs on the input's device in ``dtype`` (default float64,
    float32 on MPS). ``method``: "closed_form" (:func:`symmetric_eigen`, the fast default), "compiled" (the
    same through torch.compile, for the GPU fast path) or "eigh" (torch.linalg.eigh, a plain reference). Rotations are proper: with eigh the last column is negated where
    det < 0, as upstream's reflection fix. Results are float32.
    """
    dtype = dtype or decomposition_dtype(cov.device)
    batch_shape = cov.shape[:-2]
    flat = cov.reshape(-1, 3, 3).to(dtype)
    flat = (flat + flat.transpose(-1, -2)) / 2
    if method in ("closed_form", "compiled"):
        solve = symmetric_eigen
    elif method == "eigh":
        solve = _eigh_descending
    else:
        raise ValueError(f"unknown decomposition method {method!r}: closed_form or eigh")
    # Chunks help the CPU's caches; on a GPU they only multiply the kernel launches (~300 per chunk).
    chunk = _CHUNK if method == "closed_form" and flat.device.type == "cpu" else max(1, flat.shape[0])
    factors = _compiled_factors() if method == "compiled" else functools.partial(_factors, solve)
    scales, quats = [], []
    for i in range(0, flat.shape[0], chunk):
        scale, quat = factors(flat[i : i + chunk])
        scales.append(scale)
        quats.append(quat)
    if not scales:
        return cov.new_zeros(*batch_shape, 3), cov.new_zeros(*batch_shape, 4)
    return torch.cat(scales).reshape(*batch_shape, 3), torch.cat(quats).reshape(*batch_shape, 4)


def _factors(
    solve: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], A: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    eigenvalues, vectors = solve(A)
    return eigenvalues.clamp(min=0).sqrt().float(), matrix_to_quaternion(vectors).float()


@functools.cache
def _compiled_factors() -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The closed form through torch.compile: its ~300 float64 element-wise steps fuse into a few GPU kernels."""
    return torch.compile(functools.partial(_factors, symmetric_eigen), dynamic=False)  # type: ignore[return-value]


def _eigh_descending(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh, reordered descending, last column negated where det < 0 (upstream's reflection fix)."""
    eigenvalues, vectors = torch.linalg.eigh(A)
    eigenvalues, vectors = eigenvalues.flip(-1), vectors.flip(-1)
    sign = torch.where(torch.linalg.det(vectors) < 0, -1.0, 1.0).to(A.dtype)
    return eigenvalues, torch.cat([vectors[..., :2], vectors[..., 2:] * sign[..., None, None]], -1)


def covariances(gaussians: Gaussians) -> torch.Tensor:
    """(B, N, 3, 3) Σ = R·diag(s²)·Rᵀ in float32 from the normalised quaternions and scales."""
    R = quaternion_to_matrix(gaussians.quaternions)
    return (R * gaussians.singular_values[..., None, :].square()) @ R.transpose(-1, -2)


def unprojection_matrix(f_px: float, image_size: tuple[int, int]) -> torch.Tensor:
    """The 3×3 linear map NDC·depth -> metric camera space: diag(W/(2f), H/(2f), 1) (float32).

    The reference inverts NDC·K_resized in float32; analytically the inverse is this diagonal (principal point
    at (W/2, H/2), as upstream; translation zero).
    """
    width, height = image_size
    return torch.diag(torch.tensor([width / (2.0 * f_px), height / (2.0 * f_px), 1.0], dtype=torch.float32))


def unproject(gaussians: Gaussians, f_px: float, image_size: tuple[int, int], method: str = "closed_form") -> Gaussians:
    """NDC Gaussians -> metric Gaussians in the OpenCV camera frame (spec §6).

    Args:
        gaussians: composer output (means = (x_ndc·z, y_ndc·z, z), raw quaternions).
        f_px: focal length of the original image [px].
        image_size: original (W, H) [px].
        method: covariance decomposition, see :func:`decompose_covariances`.

    Returns:
        Metric Gaussians on the same device: means A·m, covariances A·Σ·Aᵀ re-factored into sorted scales and
        unit quaternions; colours and opacities unchanged.
    """
    A = unprojection_matrix(f_px, image_size).to(gaussians.means.device)
    if method == "compiled":  # the whole step in one compiled graph; A is an input, so no recompile per photo
        g = gaussians
        diagonal = A.diagonal().contiguous()
        means, singular_values, quaternions = _compiled_unproject()(g.means, g.singular_values, g.quaternions, diagonal)
        return replace(gaussians, means=means, singular_values=singular_values, quaternions=quaternions)
    means = gaussians.means @ A.T
    cov = A @ covariances(gaussians) @ A.T
    singular_values, quaternions = decompose_covariances(cov, method)
    return replace(gaussians, means=means, singular_values=singular_values, quaternions=quaternions)


def _unproject_tensors(
    means: torch.Tensor, singular_values: torch.Tensor, quaternions: torch.Tensor, a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`unproject` on plain tensors, for torch.compile; ``a`` is the diagonal of the unprojection matrix.

    The 3×3 products are written element-wise (A is diagonal, so A·Σ·Aᵀ = Σ ∘ a·aᵀ): Inductor fuses them into
    the decomposition's kernels, where batched ``@`` would go to cuBLAS as 1.2 M tiny matrix products (4.4 ms
    of a 5.6 ms unprojection on an H100).
    """
    R = quaternion_to_matrix(quaternions)
    variances = singular_values.square()
    # Σ_ij = Σ_k R_ik s_k² R_jk, then scaled by a_i a_j.
    cov = (R[..., :, None, :] * R[..., None, :, :] * variances[..., None, None, :]).sum(-1)
    cov = cov * (a[:, None] * a[None, :])
    flat = cov.reshape(-1, 3, 3).to(decomposition_dtype(cov.device))
    scales, quats = _factors(symmetric_eigen, (flat + flat.transpose(-1, -2)) / 2)
    batch_shape = cov.shape[:-2]
    return means * a, scales.reshape(*batch_shape, 3), quats.reshape(*batch_shape, 4)


_PRECOMPILED_UNPROJECT: list[Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = []


def set_compiled_unproject(function: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None) -> None:
    """Use ``function`` (inference.precompiled's saved one) for the "compiled" unprojection; None: torch.compile."""
    _PRECOMPILED_UNPROJECT[:] = [] if function is None else [function]


def _compiled_unproject() -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return _PRECOMPILED_UNPROJECT[0] if _PRECOMPILED_UNPROJECT else _torch_compiled_unproject()


@functools.cache
def _torch_compiled_unproject() -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return torch.compile(_unproject_tensors, dynamic=False)  # type: ignore[return-value]


def disparity_quantiles(gaussians: Gaussians) -> np.ndarray:
    """10 % and 90 % quantiles of 1/z over all Gaussians (float32 torch.quantile, as upstream) -> (2,)."""
    inverse_z = 1.0 / gaussians.means[0, :, 2]
    q = torch.tensor([0.1, 0.9], device=inverse_z.device, dtype=inverse_z.dtype)
    return torch.quantile(inverse_z, q).cpu().numpy()


def vertex_columns(gaussians: Gaussians) -> np.ndarray:
    """The 14 SHARP vertex columns of batch item 0 as one structured little-endian float32 array (N,)."""
    g = gaussians
    f_dc = conventions.rgb_to_sh_dc(conventions.linear_to_srgb(g.colors[0]))
    table = torch.cat(
        [
            g.means[0],
            f_dc,
            conventions.logit(g.opacities[0])[:, None],
            g.singular_values[0].log(),
            g.quaternions[0],
        ],
        dim=1,
    ).float()
    if table.is_cuda:
        # Straight into page-locked memory (torch caches the block): one fast copy, no second host copy.
        host = torch.empty(table.shape, dtype=torch.float32, pin_memory=True)
        values = host.copy_(table).numpy()
    else:
        values = table.contiguous().numpy()
    # The (N, 14) float32 rows are the vertex records: view them as the structured dtype (little-endian hosts).
    dtype = np.dtype([(name, "<f4") for name in ply.SHARP_VERTEX_PROPERTIES])
    if values.dtype.byteorder == ">" or (values.dtype.byteorder == "=" and not np.little_endian):
        vertex = np.empty(len(values), dtype=dtype)
        vertex.view("<f4").reshape(len(values), -1)[:] = values
        return vertex
    return values.view(dtype).reshape(len(values))


def save_ply(
    gaussians: Gaussians,
    path: str | os.PathLike[str],
    f_px: float,
    image_size: tuple[int, int],
    plain: bool = False,
) -> None:
    """Write metric Gaussians (batch item 0) as a SHARP PLY, atomically.

    Args:
        gaussians: metric Gaussians from :func:`unproject`.
        path: output file.
        f_px: focal length of the original image [px].
        image_size: original (W, H) [px].
        plain: write the vertex element only (for tools that reject extra elements).
    """
    vertex = vertex_columns(gaussians)
    extra = (
        []
        if plain
        else ply.sharp_metadata(f_px, image_size, len(vertex), [float(v) for v in disparity_quantiles(gaussians)])
    )
    ply.write_ply(path, vertex, extra)
