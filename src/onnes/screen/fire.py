"""FIRE on atom positions and cell, vectorised over a batch of cells of any sizes.

The algorithm is ASE's ``FIRE`` (Bitzek et al., PRL 97, 170201, 2006, with ASE's
defaults and its max-step cap) driving a ``FrechetCellFilter`` (Tadmor et al., PRB 59,
235, 1999; gradients of the log-deformation after lan496's derivation, as in ASE), which
is what chgnet's ``StructOptimizer`` runs one cell at a time. Here every cell of a batch
takes its step in a few numpy calls, so structures can join and leave between steps.

Degrees of freedom per cell: the positions ``u`` in the undeformed cell (n x 3) and the
log-deformation ``X = c * logm(F)`` (3 x 3, c = number of atoms), where the current cell
is ``C = C0 F^T`` and positions are ``r = u F^T``. ASE recomputes logm from the cell each
step; keeping X itself gives the same trajectory (up to rounding) without a matrix log.
Generalised forces: ``f F`` on u, and ``D_{L^T}(G) / c`` on X with ``L = X / c``,
``G = -V sigma F^-T`` (the virial pulled back) and ``D_A(E)`` the Frechet derivative of
the matrix exponential, which is the adjoint that ASE assembles from nine
``expm_frechet`` calls; here it is one 6 x 6 block exponential per cell (Higham,
Functions of Matrices, 2008, eq. 10.15).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm


@dataclass(frozen=True)
class FireParameters:  # ase.optimize.FIRE's defaults
    dt: float = 0.1
    maxstep: float = 0.2
    dtmax: float = 1.0
    nmin: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99


def _segment_sum(values: np.ndarray, owner: np.ndarray, count: int) -> np.ndarray:
    return np.bincount(owner, weights=values, minlength=count)


class BatchFire:
    """FIRE state of a changing batch of cells: ``add`` cells, ``step`` them all with
    their forces and stresses, ``keep`` the ones still relaxing."""

    def __init__(self, relax_cell: bool = True, parameters: FireParameters = FireParameters()):
        self.relax_cell = relax_cell
        self.p = parameters
        self.owner = np.zeros(0, dtype=np.int64)  # cell index of each atom
        self.u = np.zeros((0, 3))  # positions in the undeformed cell (A)
        self.velocity = np.zeros((0, 3))
        self.orig_cell = np.zeros((0, 3, 3))
        self.log_deform = np.zeros((0, 3, 3))  # X = c logm(F)
        self.cell_velocity = np.zeros((0, 3, 3))
        self.n_atoms = np.zeros(0, dtype=np.int64)
        self.dt = np.zeros(0)
        self.a = np.zeros(0)
        self.n_positive = np.zeros(0, dtype=np.int64)  # FIRE's Nsteps: steps since the last reset
        self.started = np.zeros(0, dtype=bool)  # ASE's "vel is None" before the first step

    def __len__(self) -> int:
        return len(self.n_atoms)

    def add(self, positions: np.ndarray, cell: np.ndarray) -> None:
        """Append one cell (cartesian positions n x 3, rows of ``cell`` are lattice vectors)."""
        n = len(positions)
        self.owner = np.concatenate([self.owner, np.full(n, len(self))])
        self.u = np.concatenate([self.u, positions])
        self.velocity = np.concatenate([self.velocity, np.zeros((n, 3))])
        self.orig_cell = np.concatenate([self.orig_cell, cell[None]])
        self.log_deform = np.concatenate([self.log_deform, np.zeros((1, 3, 3))])
        self.cell_velocity = np.concatenate([self.cell_velocity, np.zeros((1, 3, 3))])
        self.n_atoms = np.append(self.n_atoms, n)
        self.dt = np.append(self.dt, self.p.dt)
        self.a = np.append(self.a, self.p.astart)
        self.n_positive = np.append(self.n_positive, 0)
        self.started = np.append(self.started, False)

    def keep(self, mask: np.ndarray) -> None:
        """Drop the cells where ``mask`` is False; the others keep their order."""
        atom_mask = mask[self.owner]
        new_index = np.cumsum(mask) - 1
        self.owner = new_index[self.owner[atom_mask]]
        self.u, self.velocity = self.u[atom_mask], self.velocity[atom_mask]
        for name in ("orig_cell", "log_deform", "cell_velocity", "n_atoms", "dt", "a", "n_positive", "started"):
            setattr(self, name, getattr(self, name)[mask])

    def deformation(self) -> np.ndarray:
        """F = expm(X / c) per cell."""
        return expm(self.log_deform / self.n_atoms[:, None, None])

    def cells_and_positions(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Current cells (B, 3, 3) and cartesian positions per cell."""
        deform = self.deformation()
        cells = self.orig_cell @ deform.transpose(0, 2, 1)
        positions = np.einsum("nj,nij->ni", self.u, deform[self.owner])
        return cells, np.split(positions, np.cumsum(self.n_atoms)[:-1])

    def generalised_forces(self, forces: np.ndarray, stresses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forces on u (N, 3) and on X (B, 3, 3) from cartesian forces (N, 3, eV/A) and
        stresses (B, 3, 3, eV/A^3; symmetrised as ASE's Voigt round trip does)."""
        if not self.relax_cell:  # positions only: the cell never deforms
            return forces, np.zeros((len(self), 3, 3))
        deform = self.deformation()
        atom_part = np.einsum("ni,nij->nj", forces, deform[self.owner])
        cells = self.orig_cell @ deform.transpose(0, 2, 1)
        volume = np.abs(np.linalg.det(cells))
        virial = -volume[:, None, None] * 0.5 * (stresses + stresses.transpose(0, 2, 1))
        pulled_back = virial @ np.linalg.inv(deform.transpose(0, 2, 1))
        log_deform = self.log_deform / self.n_atoms[:, None, None]
        block = np.zeros((len(self), 6, 6))
        block[:, :3, :3] = block[:, 3:, 3:] = log_deform.transpose(0, 2, 1)
        block[:, :3, 3:] = pulled_back
        cell_part = expm(block)[:, :3, 3:] / self.n_atoms[:, None, None]
        return atom_part, cell_part

    def fmax(self, atom_part: np.ndarray, cell_part: np.ndarray) -> np.ndarray:
        """Largest row norm of each cell's generalised forces (ASE's convergence test)."""
        atom_max = np.zeros(len(self))
        np.maximum.at(atom_max, self.owner, (atom_part**2).sum(1))
        return np.sqrt(np.maximum(atom_max, (cell_part**2).sum(2).max(1)))

    def step(self, atom_part: np.ndarray, cell_part: np.ndarray) -> None:
        """One FIRE step of every cell (ase.optimize.FIRE.step, vectorised)."""
        count, owner = len(self), self.owner

        def dot(a_atoms, a_cell, b_atoms, b_cell):
            return _segment_sum((a_atoms * b_atoms).sum(1), owner, count) + (a_cell * b_cell).sum((1, 2))

        vf = dot(atom_part, cell_part, self.velocity, self.cell_velocity)
        ff = dot(atom_part, cell_part, atom_part, cell_part)
        vv = dot(self.velocity, self.cell_velocity, self.velocity, self.cell_velocity)
        downhill = self.started & (vf > 0.0)
        reset = self.started & ~downhill
        # downhill: mix the velocity towards the force direction, speed up after nmin steps
        mix = np.where(downhill, self.a, 0.0)
        scale = np.where(downhill, np.sqrt(vv) / np.sqrt(np.where(ff > 0, ff, 1.0)), 0.0)
        keep_v = np.where(reset, 0.0, 1.0 - mix)
        self.velocity = keep_v[owner, None] * self.velocity + (mix * scale)[owner, None] * atom_part
        self.cell_velocity = keep_v[:, None, None] * self.cell_velocity + (mix * scale)[:, None, None] * cell_part
        accelerate = downhill & (self.n_positive > self.p.nmin)
        self.dt = np.where(accelerate, np.minimum(self.dt * self.p.finc, self.p.dtmax), self.dt)
        self.a = np.where(accelerate, self.a * self.p.fa, self.a)
        self.n_positive = np.where(downhill, self.n_positive + 1, self.n_positive)
        # uphill: stop, restart slowly
        self.a = np.where(reset, self.p.astart, self.a)
        self.dt = np.where(reset, self.dt * self.p.fdec, self.dt)
        self.n_positive = np.where(reset, 0, self.n_positive)
        self.started[:] = True

        self.velocity += self.dt[owner, None] * atom_part
        self.cell_velocity += self.dt[:, None, None] * cell_part
        du, dx = self.dt[owner, None] * self.velocity, self.dt[:, None, None] * self.cell_velocity
        norm = np.sqrt(dot(du, dx, du, dx))
        shrink = np.where(norm > self.p.maxstep, self.p.maxstep / np.where(norm > 0, norm, 1.0), 1.0)
        self.u = self.u + shrink[owner, None] * du
        if self.relax_cell:
            self.log_deform = self.log_deform + shrink[:, None, None] * dx
