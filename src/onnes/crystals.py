"""The crystal table: the one data contract between stages (README, "The data stage").

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

from onnes.io import atomic_path

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
        raise ValueError(f"{path}: not a crystal table, missing columns {missing}")


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """Write a table to Parquet atomically."""
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def read_table(path: str | Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    table = pd.read_parquet(path, columns=list(columns) if columns else None)
    if columns is None:
        check_columns(table, path)
    return table


def export_cif(table: pd.DataFrame, directory: str | Path) -> list[Path]:
    """One CIF per row, named ``{id}.cif`` (ids made file-name safe)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for _, row in table.iterrows():
        path = directory / f"{_safe_name(row['id'])}.cif"
        with atomic_path(path) as tmp:
            to_structure(row).to(filename=str(tmp), fmt="cif")
        paths.append(path)
    return paths


def export_extxyz(table: pd.DataFrame, path: str | Path) -> Path:
    """All rows as one extended-XYZ file; scalar columns become per-frame info."""
    from ase.io import write

    scalar_columns = [
        c
        for c in table.columns
        if c not in REQUIRED_COLUMNS[1:4] and pd.api.types.is_scalar(table[c].iloc[0] if len(table) else 0)
    ]
    frames = []
    for _, row in table.iterrows():
        atoms = to_atoms(row)
        for column in scalar_columns:
            value = row[column]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            atoms.info[column] = value.item() if hasattr(value, "item") else value
        frames.append(atoms)
    with atomic_path(path) as tmp:
        write(str(tmp), frames, format="extxyz")
    return Path(path)


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in str(text))
