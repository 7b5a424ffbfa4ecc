"""Batches of crystals with different atom counts, flattened over atoms.

Atoms of all crystals are concatenated; ``crystal`` maps each atom to its crystal.
Fully connected edges within each crystal are built on demand (``edges``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Lattice, Structure

from onnes.crystals import row_arrays


def moved_to(record, device):
    """A copy of a dataclass record with every tensor field on ``device``."""
    return replace(record, **{k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                              for k, v in record.__dict__.items()})


@dataclass
class CrystalBatch:
    types: torch.Tensor  # (N,) type index into the model's vocabulary
    frac: torch.Tensor  # (N, 3) fractional coordinates in [0, 1)
    lattice: torch.Tensor  # (B, 3, 3) rows are lattice vectors
    num_atoms: torch.Tensor  # (B,)
    crystal: torch.Tensor  # (N,) crystal index of each atom
    cond: torch.Tensor | None = None  # (B, P) property conditioning

    @property
    def num_crystals(self) -> int:
        return int(self.num_atoms.shape[0])

    def to(self, device) -> "CrystalBatch":
        return moved_to(self, device)


@dataclass
class Coupling:
    """The base point of each training path, paired with its endpoint instead of drawn
    independently of it (reflow's teacher pairs, Liu et al. 2023): ``lattice0`` (B, 6)
    and ``frac0`` (N, 3) are the prior draws a teacher integrated into the batch's
    crystals, ``types0`` (N, K) the continuous types' draw (None for masked types, which
    keep their own corruption), ``lattice1`` (B, 6) the teacher's endpoint in the model's
    standardised lattice parameters (taken as is, not re-encoded from the matrix)."""

    lattice0: torch.Tensor
    frac0: torch.Tensor
    lattice1: torch.Tensor
    types0: torch.Tensor | None = None

    def to(self, device) -> "Coupling":
        return moved_to(self, device)


def crystal_index(num_atoms: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(num_atoms), device=num_atoms.device), num_atoms)


def edges(num_atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs (i, j), i != j, of atoms in the same crystal; vectorised."""
    device = num_atoms.device
    offsets = torch.cumsum(num_atoms, 0) - num_atoms
    pairs_per = num_atoms * num_atoms
    crystal = torch.repeat_interleave(torch.arange(len(num_atoms), device=device), pairs_per)
    start = torch.cumsum(pairs_per, 0) - pairs_per
    local = torch.arange(int(pairs_per.sum()), device=device) - start[crystal]
    n = num_atoms[crystal]
    i, j = local // n, local % n
    keep = i != j
    base = offsets[crystal][keep]
    return base + i[keep], base + j[keep]


@dataclass
class CrystalDataset:
    """Model-ready arrays of a crystal table (Niggli-reduced cells, vocabulary indices)."""

    species: list[np.ndarray]
    frac: list[np.ndarray]
    lattice: np.ndarray  # (M, 3, 3)
    cond: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.species)

    @classmethod
    def from_table(cls, table: pd.DataFrame, max_atoms: int | None = None, cond_columns=()) -> "CrystalDataset":
        species, frac, lattices, conds = [], [], [], []
        for _, row in table.iterrows():
            z, f, lat = row_arrays(row)
            if max_atoms and len(z) > max_atoms:
                continue
            structure = _niggli(Structure(Lattice(lat), z.tolist(), f))
            species.append(np.array([site.specie.Z for site in structure], dtype=np.int64))
            frac.append(np.mod(structure.frac_coords, 1.0))
            lattices.append(structure.lattice.matrix)
            if cond_columns:
                conds.append([float(row[c]) for c in cond_columns])
        cond = np.asarray(conds, dtype=np.float32) if cond_columns else None
        return cls(species, frac, np.asarray(lattices, dtype=np.float64), cond)

    def batch(self, indices, vocabulary: "Vocabulary") -> CrystalBatch:
        num_atoms = torch.tensor([len(self.species[i]) for i in indices])
        types = torch.from_numpy(vocabulary.encode(np.concatenate([self.species[i] for i in indices])))
        frac = torch.from_numpy(np.concatenate([self.frac[i] for i in indices])).float()
        lattice = torch.from_numpy(self.lattice[list(indices)]).float()
        cond = torch.from_numpy(self.cond[list(indices)]) if self.cond is not None else None
        return CrystalBatch(types, frac, lattice, num_atoms, crystal_index(num_atoms), cond)


class Vocabulary:
    """Atomic numbers present in the training data <-> contiguous type indices."""

    def __init__(self, atomic_numbers):
        self.atomic_numbers = np.array(sorted(set(int(z) for z in atomic_numbers)), dtype=np.int64)
        self._index = {int(z): i for i, z in enumerate(self.atomic_numbers)}

    def __len__(self) -> int:
        return len(self.atomic_numbers)

    def encode(self, z: np.ndarray) -> np.ndarray:
        try:
            return np.array([self._index[int(x)] for x in z], dtype=np.int64)
        except KeyError as exc:
            raise ValueError(f"element Z={exc.args[0]} is not in the model's vocabulary") from None

    def decode(self, types: np.ndarray) -> np.ndarray:
        return self.atomic_numbers[np.asarray(types)]


def _niggli(structure: Structure) -> Structure:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return structure.get_reduced_structure("niggli")
    except Exception:  # reduction can fail on nearly degenerate cells; keep the original
        return structure
