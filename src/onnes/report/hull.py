"""Hull context of a candidate: where it sits among the known phases of its chemical
system. The hull is the campaign's own (``screen/hull_references.parquet``: formation
energies per atom of the reference phases, elements at 0) and the candidate's point is
its pre-relaxation formation energy on the same footing, so the picture is the one its
``e_above_hull`` was read from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition


class HullReferences:
    """Formation energies of the reference phases, looked up by chemical system."""

    def __init__(self, table: pd.DataFrame):
        self.amounts = [json.loads(c) for c in table.composition]  # {"Nb": 3, "Sn": 1}
        self.energies = table.e_form_per_atom.to_numpy(float)
        self.systems = [frozenset(a) for a in self.amounts]

    @classmethod
    def read(cls, path: str | Path) -> "HullReferences":
        return cls(pd.read_parquet(path, columns=["composition", "e_form_per_atom"]))

    def binary(self, elements: tuple[str, str]) -> pd.DataFrame:
        """Phases of the A-B system as (x = fraction of B, formation energy per atom,
        formula, on the lower hull), elements included at 0."""
        a, b = elements
        system = frozenset(elements)
        rows = [(0.0, 0.0, a), (1.0, 0.0, b)]
        for amounts, energy, phases in zip(self.amounts, self.energies, self.systems):
            if phases == system:
                composition = Composition(amounts)
                rows.append((composition.get_atomic_fraction(b), float(energy), composition.reduced_formula))
        table = pd.DataFrame(rows, columns=["x", "e_form", "formula"]).sort_values(["x", "e_form"])
        table["on_hull"] = lower_hull_mask(table.x.to_numpy(), table.e_form.to_numpy())
        return table.reset_index(drop=True)


def lower_hull_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points on the lower convex hull of (x, y) (Andrew's monotone chain, lower part;
    of several points at one x only the lowest can be on it)."""
    order = np.lexsort((y, x))
    hull: list[int] = []
    for i in order:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = (x[hull[-2]], y[hull[-2]]), (x[hull[-1]], y[hull[-1]])
            if (x2 - x1) * (y[i] - y1) - (y2 - y1) * (x[i] - x1) <= 0:  # not a left turn
                hull.pop()
            else:
                break
        if hull and x[hull[-1]] == x[i]:
            continue  # a higher point at the same composition
        hull.append(i)
    mask = np.zeros(len(x), dtype=bool)
    mask[hull] = True
    return mask


def context(row: pd.Series) -> str:
    """One line: its energy above the hull by each MLIP (named) and what it would
    decompose into."""
    parts = [f"{row.e_above_hull:+.3f} eV/atom, decomposes to {row.decomposition} ({row.get('mlip', 'MLIP')})"]
    confirm = row.get("confirm_e_above_hull")
    if confirm is not None and pd.notna(confirm):
        parts.append(f"{confirm:+.3f}, to {row.get('confirm_decomposition')} ({row.get('confirm_mlip', 'confirming')})")
    return "; ".join(parts)


def binary_elements(formula: str) -> tuple[str, str] | None:
    """(A, B) in electronegativity order for a two-element formula, else None."""
    elements = sorted(Composition(formula).elements, key=lambda e: (e.X, e.Z))
    return (elements[0].symbol, elements[1].symbol) if len(elements) == 2 else None
