"""What physics knows about Tc labels that the superconductor records do not say.

1. **Band insulators are negatives.** SuperCon's Tc = 0 rows are materials someone tested
   and found wanting: nearly all metals and intermetallics. Undoped band insulators are
   absent, so a classifier trained on the records alone has never seen what "cannot
   superconduct" looks like and calls LiF or CsI superconducting. Crystals whose DFT band
   gap (Materials Project, GGA/GGA+U) is at least ``band_gap_min`` eV at ambient pressure
   become Tc = 0 examples. GGA underestimates gaps, so a GGA gap of 0.5 eV or more is an
   insulator; the converse error (Mott insulators GGA calls metals) only leaves a
   negative out. A composition with a superconducting record is never a negative.
2. **A metallicity gate.** A classifier of P(band gap >= band_gap_min) from composition,
   trained on the same DFT table, gives each candidate a verdict ("insulator" above 0.5).
   GGA+U gives the undoped cuprate parents (La2CuO4, YBa2Cu3O6) gaps, so the gate's
   effect on doped cuprates is measured, not assumed (``predictor.evaluate``).
3. **Ambient pressure.** The records mix ambient and high-pressure Tc without a pressure
   field. Documented rule: an elemental record of an element that superconducts only
   under pressure (Hamlin, Physica C 514, 59 (2015), Fig. 1; Shimizu, Physica C 514, 46
   (2015)), and a hydride with at least 3 H per other atom (H3S, LaH10, YH6, CaH6, CeH9:
   all above 100 GPa; Th4H15, 8 K at ambient, is the one known false flag) are
   high-pressure records, kept out of ambient training and labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from onnes.data.labels import composition_key, parse_composition

# Elements with a superconducting phase only under pressure (none at ambient above 1 K).
HIGH_PRESSURE_ELEMENTS = frozenset({
    "Li", "B", "O", "Si", "P", "S", "Ca", "Sc", "Fe", "Ge", "As", "Se", "Br", "Sr", "Y", "Sb", "Te",
    "I", "Cs", "Ba", "Ce", "Eu", "Lu", "Bi",
})
SUPERHYDRIDE_H_PER_ATOM = 3.0


def high_pressure_only(formula: str) -> bool:
    """True for a composition whose superconductivity is known only under pressure."""
    composition = parse_composition(formula) if isinstance(formula, str) else None
    if composition is None:
        return False
    symbols = {el.symbol for el in composition}
    if len(symbols) == 1:
        return symbols <= HIGH_PRESSURE_ELEMENTS
    hydrogen = composition["H"]
    others = composition.num_atoms - hydrogen
    return bool(hydrogen > 0 and others > 0 and hydrogen / others >= SUPERHYDRIDE_H_PER_ATOM)


def high_pressure_mask(formulas: pd.Series) -> pd.Series:
    return formulas.map(high_pressure_only).astype(bool)


def band_insulators(dft: pd.DataFrame, band_gap_min: float, max_e_above_hull: float | None) -> pd.DataFrame:
    """One row per reduced composition of ``dft`` (columns formula or pretty_formula,
    band_gap, optionally e_above_hull) whose every listed phase within
    ``max_e_above_hull`` of the hull has a gap of at least ``band_gap_min`` eV:
    id, formula, tc_K = 0, band_gap (the smallest), group."""
    formula = dft["formula"] if "formula" in dft else dft["pretty_formula"]
    table = pd.DataFrame({"formula": formula.astype(str).to_numpy(),
                          "band_gap": pd.to_numeric(dft["band_gap"], errors="coerce").to_numpy()})
    if max_e_above_hull is not None and "e_above_hull" in dft:
        table = table[(pd.to_numeric(dft["e_above_hull"], errors="coerce") <= max_e_above_hull).to_numpy()]
    table = table[np.isfinite(table.band_gap)]
    table["group"] = table.formula.map(composition_key)
    table = table[table.group.notna()]
    # A polymorph that is metallic makes the composition no band insulator.
    smallest = table.groupby("group", sort=True).agg(formula=("formula", "first"), band_gap=("band_gap", "min"))
    insulators = smallest[smallest.band_gap >= band_gap_min].reset_index()
    insulators["id"] = "dft-insulator:" + insulators.formula
    insulators["tc_K"] = 0.0
    return insulators[["id", "formula", "tc_K", "band_gap", "group"]]


def at_most(table: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """A seeded random subset of at most ``limit`` rows, in the table's order (all for None)."""
    if not limit or len(table) <= limit:
        return table
    return table.sample(n=limit, random_state=0).sort_index()


def metallicity_table(dft: pd.DataFrame, band_gap_min: float) -> pd.DataFrame:
    """The gate's training rows: one per reduced composition, insulating (1) when its
    smallest gap among the listed phases is at least ``band_gap_min``."""
    everything = band_insulators(dft, -np.inf, None)
    everything["insulator"] = (everything.band_gap >= band_gap_min).astype(float)
    return everything.drop(columns=["tc_K"])
