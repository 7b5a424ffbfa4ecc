"""Structure matching with pymatgen's StructureMatcher, bucketed by reduced formula.

Two structures can only match if their reduced formulas agree, so every comparison
happens within a formula bucket: the cost grows with the matches per formula, not with
N x M. Buckets are spread over worker processes. Used for duplicate removal in
curation, and for uniqueness and novelty of generated structures.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition
from tqdm import tqdm

from onnes.crystals import to_structure

_COLUMNS = ["id", "species", "frac_coords", "lattice"]


@dataclass(frozen=True)
class Tolerances:
    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0

    def matcher(self) -> StructureMatcher:
        return StructureMatcher(ltol=self.ltol, stol=self.stol, angle_tol=self.angle_tol)


def _reduced_formula(species) -> str:
    try:
        numbers, counts = np.unique(np.asarray(species, dtype=int), return_counts=True)
        return Composition({int(z): int(n) for z, n in zip(numbers, counts)}).reduced_formula
    except (ValueError, KeyError):  # empty, or an atomic number no element has
        return ""


def reduced_formulas(table: pd.DataFrame) -> pd.Series:
    """Reduced formula of each row from its species (atomic numbers); "" if there is none."""
    return table["species"].map(_reduced_formula)


def _pool_map(function: Callable, tasks: list, workers: int) -> list:
    # Largest buckets first so one big bucket does not finish last on its own.
    tasks = sorted(tasks, key=lambda task: -len(task[0]))
    progress = dict(total=len(tasks), desc="match", unit="formula", mininterval=10)
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(tqdm(pool.map(function, tasks, chunksize=1), **progress))
    return [function(task) for task in tqdm(tasks, **progress)]


def _group_bucket(args: tuple[pd.DataFrame, Tolerances]) -> list[tuple[str, str]]:
    """(duplicate id, kept id) pairs of one bucket; the earliest row of a group is kept."""
    rows, tol = args
    structures = [to_structure(row) for _, row in rows.iterrows()]
    position = {id(s): i for i, s in enumerate(structures)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = tol.matcher().group_structures(structures)
    ids = rows["id"].tolist()
    pairs = []
    for group in groups:
        members = sorted(position[id(s)] for s in group)
        pairs.extend((ids[m], ids[members[0]]) for m in members[1:])
    return pairs


def find_duplicates(table: pd.DataFrame, tol: Tolerances, workers: int = 1, formula: Sequence[str] | None = None
                    ) -> dict[str, str]:
    """Map each duplicate row's id to the id of the earlier row it duplicates.

    ``formula`` defaults to the table's ``formula`` column.
    """
    keys = pd.Series(table["formula"] if formula is None else list(formula), index=table.index)
    tasks = [(rows[_COLUMNS], tol) for _, rows in table.groupby(keys, sort=True) if len(rows) > 1]
    return {dup: kept for pairs in _pool_map(_group_bucket, tasks, workers) for dup, kept in pairs}


def _known_in_bucket(args: tuple[pd.DataFrame, pd.DataFrame, Tolerances]) -> list[tuple[str, str]]:
    """(row id, id of the first reference it matches) for the rows of one bucket that match."""
    candidates, reference, tol = args
    references = [to_structure(row) for _, row in reference.iterrows()]
    reference_ids = reference["id"].tolist()
    matcher = tol.matcher()
    known = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, row in candidates.iterrows():
            structure = to_structure(row)
            match = next((i for i, ref in zip(reference_ids, references) if matcher.fit(structure, ref)), None)
            if match is not None:
                known.append((row["id"], match))
    return known


def find_matches(table: pd.DataFrame, reference: pd.DataFrame, tol: Tolerances, workers: int = 1
                 ) -> dict[str, str]:
    """Map each row that matches some reference structure (of the same reduced formula)
    to the id of the first reference it matches."""
    table_formula, reference_formula = reduced_formulas(table), reduced_formulas(reference)
    by_formula = dict(tuple(reference[_COLUMNS].groupby(reference_formula.to_numpy())))
    tasks = [(rows[_COLUMNS], by_formula[f], tol) for f, rows in table.groupby(table_formula.to_numpy())
             if f in by_formula]
    return {i: ref for known in _pool_map(_known_in_bucket, tasks, workers) for i, ref in known}


def find_known(table: pd.DataFrame, reference: pd.DataFrame, tol: Tolerances, workers: int = 1) -> set[str]:
    """Ids of rows that match some reference structure of the same reduced formula."""
    return set(find_matches(table, reference, tol, workers))
