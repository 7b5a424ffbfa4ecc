"""PyXtal baseline: random symmetric crystals (Fredericks et al., Comput. Phys. Commun.
261, 107810, 2021) with compositions drawn from the training set.

Each sample takes the exact atom counts of a random training cell and a space group
drawn uniformly from 2..230; PyXtal places the atoms on Wyckoff positions of that group
with its own distance checks. A group the counts do not fit is redrawn up to
``max_attempts`` times, then P1 (always compatible) is used.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
from pymatgen.core import Element
from tqdm import tqdm

from onnes.crystals import structure_columns

log = logging.getLogger(__name__)


def _one(counts: dict[str, int], rng: np.random.Generator, max_attempts: int):
    from pyxtal import pyxtal

    species, num_ions = list(counts), list(counts.values())
    groups = [int(g) for g in rng.integers(2, 231, size=max_attempts)] + [1]
    for group in groups:
        crystal = pyxtal()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                crystal.from_random(3, group, species, num_ions, random_state=int(rng.integers(2**31)))
        except Exception:  # incompatible Wyckoff multiplicities or no placement found
            continue
        if crystal.valid:
            return crystal.to_pymatgen(), group
    return None, None


def _structure(task: tuple) -> dict | None:
    """One crystal from (index, parent id, element counts, seed, max attempts)."""
    k, parent_id, counts, seed, max_attempts = task
    structure, group = _one(counts, np.random.default_rng(seed), max_attempts)
    if structure is None:
        log.warning("PyXtal placed no crystal for %s", counts)
        return None
    return {"id": f"pyxtal-{k}", "source": "pyxtal", "space_group_drawn": group, "parent_id": parent_id,
            "num_sites": len(structure), **structure_columns(structure)}


def sample_random_symmetric(reference: pd.DataFrame, count: int, seed: int, max_attempts: int = 20,
                            workers: int = 1) -> pd.DataFrame:
    """``count`` PyXtal crystals; a composition PyXtal cannot place is logged and skipped.

    Each crystal has its own seed (spawned from ``seed``), so the table is the same for
    any number of worker processes.
    """
    rng = np.random.default_rng(seed)
    parents = rng.integers(len(reference), size=count)
    seeds = np.random.SeedSequence(seed).spawn(count)
    tasks = []
    for k, parent in enumerate(parents):
        numbers, amounts = np.unique(np.asarray(reference.species.iloc[parent]), return_counts=True)
        counts = {Element.from_Z(int(z)).symbol: int(n) for z, n in zip(numbers, amounts)}
        tasks.append((k, reference.id.iloc[parent], counts, seeds[k], max_attempts))
    progress = dict(total=count, desc="pyxtal", unit="struct", mininterval=10)
    if workers > 1 and count > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(tqdm(pool.map(_structure, tasks, chunksize=8), **progress))
    else:
        rows = [_structure(task) for task in tqdm(tasks, **progress)]
    return pd.DataFrame([row for row in rows if row is not None])
