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

import numpy as np
import pandas as pd
from pymatgen.core import Element

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


def sample_random_symmetric(reference: pd.DataFrame, count: int, seed: int, max_attempts: int = 20
                            ) -> pd.DataFrame:
    """``count`` PyXtal crystals; a composition PyXtal cannot place is logged and skipped."""
    rng = np.random.default_rng(seed)
    rows = []
    parents = rng.integers(len(reference), size=count)
    for k, parent in enumerate(parents):
        species = np.asarray(reference.species.iloc[parent])
        numbers, amounts = np.unique(species, return_counts=True)
        counts = {Element.from_Z(int(z)).symbol: int(n) for z, n in zip(numbers, amounts)}
        structure, group = _one(counts, rng, max_attempts)
        if structure is None:
            log.warning("PyXtal placed no crystal for %s", counts)
            continue
        rows.append({"id": f"pyxtal-{k}", "source": "pyxtal", "space_group_drawn": group,
                     "parent_id": reference.id.iloc[parent], "num_sites": len(structure),
                     **structure_columns(structure)})
    return pd.DataFrame(rows)
