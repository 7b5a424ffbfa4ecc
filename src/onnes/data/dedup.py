"""Duplicate removal with pymatgen's StructureMatcher, bucketed by reduced formula.

Two structures can only match if their reduced formulas agree, so matching runs
within each formula bucket: the cost grows with the sizes of the buckets, not N^2.
Buckets are spread over worker processes.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher

from onnes.crystals import to_structure


@dataclass(frozen=True)
class Tolerances:
    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0


def _duplicates_in_bucket(args: tuple[pd.DataFrame, Tolerances]) -> list[tuple[str, str]]:
    """(duplicate id, kept id) pairs of one bucket; the earliest row of a group is kept."""
    rows, tol = args
    structures = [to_structure(row) for _, row in rows.iterrows()]
    position = {id(s): i for i, s in enumerate(structures)}
    matcher = StructureMatcher(ltol=tol.ltol, stol=tol.stol, angle_tol=tol.angle_tol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = matcher.group_structures(structures)
    ids = rows["id"].tolist()
    pairs = []
    for group in groups:
        members = sorted(position[id(s)] for s in group)
        pairs.extend((ids[m], ids[members[0]]) for m in members[1:])
    return pairs


def find_duplicates(table: pd.DataFrame, tol: Tolerances, workers: int = 1) -> dict[str, str]:
    """Map each duplicate row's id to the id of the row it duplicates."""
    buckets = [
        (rows[["id", "species", "frac_coords", "lattice"]], tol)
        for _, rows in table.groupby("formula", sort=True)
        if len(rows) > 1
    ]
    # Largest buckets first so one big bucket does not finish last on its own.
    buckets.sort(key=lambda b: -len(b[0]))
    if workers > 1 and len(buckets) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_duplicates_in_bucket, buckets, chunksize=1))
    else:
        results = [_duplicates_in_bucket(b) for b in buckets]
    return {dup: kept for pairs in results for dup, kept in pairs}
