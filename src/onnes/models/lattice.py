"""Rotation-invariant lattice representation used by every family.

A lattice L (rows = lattice vectors) is represented by six numbers
``(log a - log(n)/3, log b - log(n)/3, log c - log(n)/3, alpha, beta, gamma)``
(angles in radians, n = number of atoms), standardised with training-set statistics.
Lengths scale as n^(1/3) at fixed density, so subtracting log(n)/3 removes most of the
size dependence; a Gaussian in the standardised space is then a log-normal
distribution of lengths fitted per cell size, the informative lattice base of FlowMM
(Miller et al., ICML 2024). The representation is invariant to rotations of the cell,
so no model input depends on the cell's orientation.
"""

from __future__ import annotations

import math

import torch

DEG = math.pi / 180.0
# Decoded angles are kept in a range where a cell can be valid; the Niggli-reduced
# training cells lie well inside it.
ANGLE_MIN, ANGLE_MAX = 20.0 * DEG, 160.0 * DEG


def params_from_matrix(lattice: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) lattice matrices -> (B, 6) unstandardised parameters."""
    lengths = lattice.norm(dim=-1)
    a, b, c = lattice[:, 0], lattice[:, 1], lattice[:, 2]

    def angle(u, v):
        cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
        return torch.arccos(cos.clamp(-1.0, 1.0))

    angles = torch.stack([angle(b, c), angle(a, c), angle(a, b)], dim=-1)
    log_lengths = lengths.log() - num_atoms.to(lengths.dtype).log().unsqueeze(-1) / 3.0
    return torch.cat([log_lengths, angles], dim=-1)


def matrix_from_params(params: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
    """(B, 6) parameters -> (B, 3, 3) matrices in pymatgen's standard orientation."""
    lengths = (params[:, :3] + num_atoms.to(params.dtype).log().unsqueeze(-1) / 3.0).exp()
    alpha, beta, gamma = params[:, 3:].clamp(ANGLE_MIN, ANGLE_MAX).unbind(-1)
    a, b, c = lengths.unbind(-1)
    # Same construction as pymatgen's Lattice.from_parameters (c along z).
    cos_alpha, cos_beta, cos_gamma = alpha.cos(), beta.cos(), gamma.cos()
    sin_alpha, sin_beta = alpha.sin(), beta.sin()
    val = ((cos_alpha * cos_beta - cos_gamma) / (sin_alpha * sin_beta)).clamp(-1.0, 1.0)
    gamma_star = torch.arccos(val)
    zeros = torch.zeros_like(a)
    vector_a = torch.stack([a * sin_beta, zeros, a * cos_beta], -1)
    vector_b = torch.stack(
        [-b * sin_alpha * gamma_star.cos(), b * sin_alpha * gamma_star.sin(), b * cos_alpha], -1
    )
    vector_c = torch.stack([zeros, zeros, c], -1)
    return torch.stack([vector_a, vector_b, vector_c], dim=1)


def gram_features(params: torch.Tensor) -> torch.Tensor:
    """Invariant features of a (standardised or raw) parameter vector for the denoiser:
    the parameters themselves plus cos of the angles (the normalised metric L L^T)."""
    return torch.cat([params[:, :3], params[:, 3:].cos(), params[:, 3:].sin()], dim=-1)


class LatticeNormalizer(torch.nn.Module):
    """Standardise lattice parameters with training-set mean and std (saved with the model)."""

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(6) if mean is None else mean.float())
        self.register_buffer("std", torch.ones(6) if std is None else std.float())

    @classmethod
    def fit(cls, params: torch.Tensor) -> "LatticeNormalizer":
        return cls(params.mean(0), params.std(0).clamp_min(1e-3))

    def encode(self, params: torch.Tensor) -> torch.Tensor:
        return (params - self.mean) / self.std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean
