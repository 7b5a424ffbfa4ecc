"""The crystal table: the one data contract between stages (docs/guide/data.md).

A Parquet file with one row per structure and at least the columns
``id`` (str), ``species`` (list[int], atomic numbers), ``frac_coords`` (list[float],
n x 3 row-major), ``lattice`` (list[float], 3 x 3 row-major, Angstrom, rows are lattice
vectors) and ``source`` (str). Stages add columns; rejected rows keep a ``drop_reason``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from ase import Atoms
from pymatgen.core import DummySpecies, Lattice, Structure

from onnes.errors import TableError
from onnes.io import read_parquet, write_parquet

REQUIRED_COLUMNS = ("id", "species", "frac_coords", "lattice", "source")


def structure_columns(structure: Structure) -> dict:
    """The contract columns of one structure (coordinates wrapped into [0, 1)).

    Raises ``ValueError`` for what a crystal table cannot hold: partially occupied sites
    and species that are not elements (pymatgen's DummySpecies, e.g. a CIF's 'Xx').
    """
    if not structure.is_ordered:
        raise ValueError(f"partially occupied sites ({structure.composition}): a crystal table holds "
                         "ordered crystals only")
    species = []
    for site in structure:
        specie = site.specie
        if isinstance(specie, DummySpecies) or not 1 <= getattr(specie, "Z", 0) <= 118:
            raise ValueError(f"'{specie}' is not a chemical element")
        species.append(int(specie.Z))
    frac = np.mod(structure.frac_coords, 1.0)
    frac[frac >= 1.0] = 0.0  # np.mod can return 1.0 for tiny negative inputs
    return {
        "species": species,
        "frac_coords": frac.reshape(-1).tolist(),
        "lattice": structure.lattice.matrix.reshape(-1).tolist(),
    }


def from_structures(
    structures: Sequence[Structure], ids: Sequence[str], source: str | Sequence[str]
) -> pd.DataFrame:
    if len(structures) != len(ids):
        raise ValueError(f"{len(structures)} structures but {len(ids)} ids")
    sources = [source] * len(ids) if isinstance(source, str) else list(source)
    rows = [
        {"id": str(i), **structure_columns(s), "source": src}
        for s, i, src in zip(structures, ids, sources)
    ]
    return pd.DataFrame(rows, columns=[*REQUIRED_COLUMNS])


def row_arrays(row) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(atomic numbers (n,), fractional coordinates (n, 3), lattice (3, 3)) of one row."""
    species = np.asarray(row["species"], dtype=np.int64)
    frac = np.asarray(row["frac_coords"], dtype=np.float64).reshape(-1, 3)
    lattice = np.asarray(row["lattice"], dtype=np.float64).reshape(3, 3)
    if len(frac) != len(species):
        raise ValueError(f"row {row['id']}: {len(species)} species but {len(frac)} coordinates")
    return species, frac, lattice


# Bounds of a sane row. Generous: they catch broken rows (a unit slip, a blown-up or
# collapsed cell), not unusual crystals. Curation applies the stricter configured ones.
MAX_VOLUME_PER_ATOM = 1000.0  # A^3; solids stay below ~100
MIN_ANGLE_DEG = 1.0  # between two lattice vectors


def row_problem(row) -> tuple[str, str] | None:
    """``(reason, detail)`` if a crystal-table row cannot describe a crystal, else None.

    The one row check every command that reads a crystal table applies before using a
    row: mismatched array lengths, zero atoms, atomic numbers outside 1..118, non-finite
    numbers, a collapsed or absurd cell. Reasons are curation's drop reasons (plus
    ``malformed_row``); the detail names the offending value.
    """
    try:
        species, frac, lattice = row_arrays(row)
    except (ValueError, TypeError) as exc:
        return "malformed_row", str(exc)
    if len(species) == 0:
        return "no_atoms", "the cell has no sites"
    outside = species[(species < 1) | (species > 118)]
    if len(outside):
        return "unknown_element", f"atomic number {int(outside[0])} is no element (1..118)"
    if not np.isfinite(lattice).all():
        return "non_finite_lattice", f"lattice {lattice.reshape(-1).tolist()}"
    if not np.isfinite(frac).all():
        return "non_finite_lattice", "NaN or infinite fractional coordinates"
    volume = abs(float(np.linalg.det(lattice)))
    lengths = np.linalg.norm(lattice, axis=1)
    if volume < 1e-6 or lengths.min() < 1e-6:
        return "degenerate_cell", f"cell volume {volume:.3g} A^3, lengths {np.round(lengths, 4).tolist()} A"
    cosines = [lattice[i] @ lattice[j] / (lengths[i] * lengths[j]) for i, j in ((1, 2), (0, 2), (0, 1))]
    angles = np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0)))
    if angles.min() < MIN_ANGLE_DEG or angles.max() > 180.0 - MIN_ANGLE_DEG:
        return "degenerate_cell", f"cell angles {np.round(angles, 3).tolist()} degrees"
    if volume / len(species) > MAX_VOLUME_PER_ATOM:
        return "implausible_cell", (f"{volume / len(species):.3g} A^3 per atom (cell lengths "
                                    f"{np.round(lengths, 3).tolist()} A) > {MAX_VOLUME_PER_ATOM}")
    return None


def row_problems(table: pd.DataFrame) -> pd.DataFrame:
    """``row_problem`` of every row: columns ``reason`` and ``detail`` (None where sane)."""
    found = [row_problem(row) or (None, None) for _, row in table.iterrows()]
    return pd.DataFrame(found, columns=["reason", "detail"], index=table.index, dtype=object)


def to_structure(row) -> Structure:
    species, frac, lattice = row_arrays(row)
    return Structure(Lattice(lattice), species.tolist(), frac, coords_are_cartesian=False)


def to_structures(table: pd.DataFrame) -> list[Structure]:
    return [to_structure(row) for _, row in table.iterrows()]


def to_atoms(row) -> Atoms:
    species, frac, lattice = row_arrays(row)
    return Atoms(numbers=species, scaled_positions=frac, cell=lattice, pbc=True)


def to_atoms_list(table: pd.DataFrame) -> list[Atoms]:
    return [to_atoms(row) for _, row in table.iterrows()]


def check_columns(table: pd.DataFrame, path: str | Path = "<table>") -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise TableError(f"{path}: not a crystal table, missing columns {missing}")


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """Write a table to Parquet atomically (without pyarrow's thread pools, see onnes.io)."""
    write_parquet(table, path)


def read_table(path: str | Path, columns: Iterable[str] | None = None, crystal: bool = True) -> pd.DataFrame:
    """A Parquet table; with ``crystal`` (and all columns) it must be a crystal table.
    ``crystal=False`` reads any of the stages' tables (e.g. SuperCon's compositions)."""
    try:
        table = read_parquet(path, columns=list(columns) if columns else None)
    except FileNotFoundError:
        raise TableError(f"{path}: no such file") from None
    except Exception as exc:  # pyarrow's errors for empty, truncated or foreign files
        raise TableError(f"{path}: not a readable Parquet table ({type(exc).__name__}: {exc})") from None
    if columns is None and crystal:
        check_columns(table, path)
    elif columns is None and "id" not in table.columns:
        raise TableError(f"{path}: not a table of this project (not a crystal table, and no 'id' column)")
    return table
