"""Substitution baseline: known superconductors with one element swapped for a
chemically similar one.

Similarity is the data-mined substitution probability of Hautier et al. (Inorg. Chem.
50, 656, 2011; pymatgen's ``SubstitutionProbability``): for two elements, the largest
joint probability over oxidation states they share. Each sample takes a random parent
(a training superconductor, Tc above ``min_parent_tc``), swaps every site of one of its
elements for one of that element's ``top_k`` most similar elements (drawn in proportion
to similarity) and rescales the cell by the change in summed atomic volumes; CHGNet
relaxation then settles the geometry.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import numpy as np
import pandas as pd
from pymatgen.core import Element

from onnes.crystals import structure_columns, to_structure
from onnes.elements import MAX_Z


@functools.lru_cache(maxsize=1)
def similar_elements(top_k: int = 3, max_z: int = MAX_Z) -> dict[str, list[tuple[str, float]]]:
    """Element -> its ``top_k`` most similar elements with scores, best first."""
    from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionProbability

    table = SubstitutionProbability()
    best: dict[str, dict[str, float]] = defaultdict(dict)
    for a in table.species:
        for b in table.species:
            if a.symbol == b.symbol or a.oxi_state != b.oxi_state or Element(b.symbol).Z > max_z:
                continue
            # pymatgen sums its normalisation over a set, so the last digits change with
            # Python's hash seed; ten significant digits are the same in every run.
            score = float(f"{table.prob(a, b):.10g}")
            if score > best[a.symbol].get(b.symbol, 0.0):
                best[a.symbol][b.symbol] = score
    # Ties broken by symbol, so that the order does not follow the set's.
    return {el: sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k] for el, scores in best.items()}


def _atomic_volume(symbol: str) -> float:
    radius = Element(symbol).atomic_radius
    return float(radius) ** 3 if radius else float("nan")


def sample_substitutions(reference: pd.DataFrame, count: int, seed: int, top_k: int = 3,
                         min_parent_tc: float = 0.0, allowed: set[str] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    if "tc_K" in reference:
        reference = reference[reference.tc_K > min_parent_tc]
    if reference.empty:
        raise ValueError(f"no parent structure with Tc > {min_parent_tc} K for the substitution baseline")
    similar = similar_elements(top_k)
    rows, attempts = [], 0
    while len(rows) < count and attempts < 20 * count:
        attempts += 1
        parent = reference.iloc[int(rng.integers(len(reference)))]
        structure = to_structure(parent)
        symbols = sorted({el.symbol for el in structure.composition})
        options = [s for s in symbols if any(t not in symbols and (allowed is None or t in allowed)
                                             for t, _ in similar.get(s, []))]
        if not options:
            continue
        old = options[int(rng.integers(len(options)))]
        choices = [(t, w) for t, w in similar[old] if t not in symbols and (allowed is None or t in allowed)]
        weights = np.array([w for _, w in choices])
        new = choices[int(rng.choice(len(choices), p=weights / weights.sum()))][0]
        scale = _atomic_volume(new) / _atomic_volume(old)
        volume = structure.volume
        structure.replace_species({old: new})
        if np.isfinite(scale):
            amount = structure.composition[new]
            structure.scale_lattice(volume * (1 + (scale - 1) * amount / structure.num_sites))
        rows.append({"id": f"substitution-{len(rows)}", "source": "substitution", "parent_id": parent["id"],
                     "substitution": f"{old}->{new}", "num_sites": len(structure),
                     **structure_columns(structure)})
    return pd.DataFrame(rows)
