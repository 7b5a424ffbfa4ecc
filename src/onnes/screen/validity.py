"""Structural validity as in the CDVAE / DiffCSP literature: every interatomic distance
(periodic images included) at least 0.5 A and a cell volume of at least 0.1 A^3."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from pymatgen.core.periodic_table import Element

from onnes.crystals import row_arrays

_IMAGES = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)  # (27, 3)


def min_distance(frac: np.ndarray, lattice: np.ndarray) -> float:
    """Shortest distance between any two atoms or an atom and its own image (A).

    Minimum image over the 27 neighbouring cells of a reduced difference; exact for
    cells that are not extremely skewed (generated cells are Niggli-like).
    """
    d = frac[None, :, :] - frac[:, None, :]
    d -= np.round(d)
    shifted = d[:, :, None, :] + _IMAGES  # (n, n, 27, 3)
    dist = np.linalg.norm(shifted @ lattice, axis=-1)
    n = len(frac)
    dist[np.arange(n), np.arange(n), 13] = np.inf  # the atom itself (image (0, 0, 0))
    return float(dist.min()) if dist.size else float("inf")


def structural_validity(table: pd.DataFrame, min_dist: float = 0.5, min_volume: float = 0.1) -> pd.DataFrame:
    """Columns ``valid_struct``, ``min_distance``, ``volume`` for every row; never raises."""
    out = {"valid_struct": [], "min_distance": [], "volume": []}
    for _, row in table.iterrows():
        try:
            _, frac, lattice = row_arrays(row)
            volume = abs(float(np.linalg.det(lattice)))
            finite = np.isfinite(lattice).all() and np.isfinite(frac).all()
            closest = min_distance(frac, lattice) if finite else float("nan")
        except (ValueError, np.linalg.LinAlgError):
            finite, volume, closest = False, float("nan"), float("nan")
        valid = bool(finite and volume >= min_volume and closest >= min_dist)
        out["valid_struct"].append(valid)
        out["min_distance"].append(closest)
        out["volume"].append(volume)
    return pd.DataFrame(out, index=table.index)


def compositional_validity(table: pd.DataFrame, oxidation_states: str = "smact14") -> pd.Series:
    """``valid_comp``: SMACT charge neutrality + Pauling test (see ``composition``), with
    the named oxidation-state set (default: the literature's, SMACT 2014)."""
    from onnes.screen.composition import smact_valid

    def valid(species) -> bool:
        symbols, counts = np.unique(np.asarray(species), return_counts=True)
        try:
            return smact_valid({Element.from_Z(int(z)).symbol: int(n) for z, n in zip(symbols, counts)},
                               oxidation_states)
        except (ValueError, KeyError):  # an atomic number no element has
            return False

    return table["species"].map(valid).rename("valid_comp")
