"""Compositional validity: SMACT charge neutrality with the Pauling electronegativity
test, the criterion of the CDVAE / DiffCSP literature (Davies et al., JOSS 4, 1361, 2019;
Xie et al., ICLR 2022).

It reproduces ``smact.screening.smact_validity(composition, oxidation_states_set=...)``
exactly (tested on a corpus of real and generated compositions). With the default set,
``smact14`` (SMACT's 2014 oxidation-state list, the one CDVAE and DiffCSP computed their
published figures with), a composition (element -> atom count) is valid when
- it has a single element, or all its elements are metals (alloys), or
- every element has oxidation states in the set and one choice of them makes the
  gcd-reduced cell charge neutral, sum_i q_i n_i = 0, with every cation strictly less
  electronegative (Pauling) than every anion. An element without a Pauling value
  (He, Ne, Ar, Rn, ...) fails that test, as in SMACT.
SMACT enumerates the product of all oxidation-state choices (billions for a
ten-element cell). Here the search is a dynamic programme over elements whose states are
(total charge, most electronegative cation, least electronegative anion): it gives the
same answer and visits at most a few thousand states, so no composition hangs it.
"""

from __future__ import annotations

import math
from functools import lru_cache, reduce

import smact

# The oxidation-state sets of SMACT's ``smact_validity`` (``oxidation_states_set``).
OXIDATION_STATE_SETS = {
    "smact14": "oxidation_states_smact14",  # CDVAE / DiffCSP / FlowMM / MatterGen tables
    "icsd16": "oxidation_states_icsd16",
    "icsd24": "oxidation_states_icsd24",
}
LITERATURE_SET = "smact14"
_INF = float("inf")


@lru_cache(maxsize=None)
def _element(symbol: str, oxidation_states: str) -> tuple[tuple[int, ...], float | None, bool]:
    """(oxidation states, Pauling electronegativity, is a metal); no states for an
    element SMACT does not know."""
    try:
        element = smact.Element(symbol)
    except (NameError, KeyError, ValueError):
        return (), None, False
    states = tuple(getattr(element, OXIDATION_STATE_SETS[oxidation_states]) or ())
    return states, element.pauling_eneg, symbol in smact.metals


def smact_valid(counts: dict[str, int], oxidation_states: str = LITERATURE_SET) -> bool:
    if oxidation_states not in OXIDATION_STATE_SETS:
        raise ValueError(f"unknown oxidation-state set '{oxidation_states}'; "
                         f"one of {', '.join(OXIDATION_STATE_SETS)}")
    symbols = [s for s, n in counts.items() if n > 0]
    if len(symbols) <= 1:
        return True
    data = {s: _element(s, oxidation_states) for s in symbols}
    if all(is_metal for _, _, is_metal in data.values()):
        return True
    if any(not states for states, _, _ in data.values()):
        return False
    if any(eneg is None for _, eneg, _ in data.values()):
        return False  # SMACT's Pauling test fails any pair with a missing value
    divisor = reduce(math.gcd, (int(counts[s]) for s in symbols))
    # state: (charge, max cation electronegativity, min anion electronegativity)
    frontier = {(0, -_INF, _INF)}
    for symbol in symbols:
        states, eneg, _ = data[symbol]
        n = int(counts[symbol]) // divisor
        grown = set()
        for charge, max_cation, min_anion in frontier:
            for q in states:
                if q > 0:
                    grown.add((charge + q * n, max(max_cation, eneg), min_anion))
                elif q < 0:
                    grown.add((charge + q * n, max_cation, min(min_anion, eneg)))
                else:
                    grown.add((charge, max_cation, min_anion))
        frontier = grown
    return any(charge == 0 and max_cation < min_anion for charge, max_cation, min_anion in frontier)
