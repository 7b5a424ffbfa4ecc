"""Compositional validity: SMACT charge neutrality with the Pauling electronegativity
test, the criterion of the CDVAE / DiffCSP literature (Davies et al., JOSS 4, 1361, 2019;
Xie et al., ICLR 2022).

A composition (element -> atom count) is valid when
- it has a single element, or all its elements are metals (alloys), or
- each element can be given one of its SMACT oxidation states such that the cell is
  charge neutral, sum_i q_i n_i = 0, and every cation is less electronegative (Pauling)
  than every anion.
The search is a dynamic programme over elements whose states are (total charge, most
electronegative cation, least electronegative anion); it visits at most a few thousand
states whatever the number of oxidation-state combinations, so no composition hangs it.
"""

from __future__ import annotations

from functools import lru_cache

import smact

_INF = float("inf")


@lru_cache(maxsize=None)
def _element(symbol: str) -> tuple[tuple[int, ...], float | None, bool]:
    element = smact.Element(symbol)
    states = tuple(q for q in (element.oxidation_states or ()) if q != 0)
    return states, element.pauling_eneg, symbol in smact.metals


def smact_valid(counts: dict[str, int]) -> bool:
    symbols = [s for s, n in counts.items() if n > 0]
    if len(symbols) <= 1:
        return True
    data = {s: _element(s) for s in symbols}
    if all(is_metal for _, _, is_metal in data.values()):
        return True
    # state: (charge, max cation electronegativity, min anion electronegativity)
    frontier = {(0, -_INF, _INF)}
    for symbol in symbols:
        states, eneg, _ = data[symbol]
        if not states:
            return False
        n = counts[symbol]
        grown = set()
        for charge, max_cation, min_anion in frontier:
            for q in states:
                if eneg is None:  # no Pauling value (e.g. noble gases): the test cannot apply
                    grown.add((charge + q * n, max_cation, min_anion))
                elif q > 0:
                    grown.add((charge + q * n, max(max_cation, eneg), min_anion))
                else:
                    grown.add((charge + q * n, max_cation, min(min_anion, eneg)))
        frontier = grown
    return any(charge == 0 and max_cation < min_anion for charge, max_cation, min_anion in frontier)
