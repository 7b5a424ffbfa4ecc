"""The screening funnel: validity -> uniqueness -> novelty -> CHGNet relaxation ->
stability on the convex hull (S.U.N.).

Definitions follow the literature so rates compare with published tables:
- valid: structurally (distances >= 0.5 A, volume >= 0.1 A^3) and compositionally (SMACT)
  valid (CDVAE, Xie et al. 2022); a row that describes no crystal at all
  (``crystals.row_problem``: no atoms, an atomic number outside 1..118, NaN, a collapsed
  or absurd cell) is invalid with that drop reason and a ``drop_detail``;
- unique: not StructureMatcher-equivalent to an earlier valid generated structure;
- novel: unique and matching no training structure (MatterGen, Zeni et al. 2025),
  StructureMatcher ltol 0.2, stol 0.3, angle_tol 5 by default.
- relaxed: selected for CHGNet relaxation (``relax.select``, at most
  ``relax.max_structures``) and relaxed (converged, stopped at ``max_steps``, or
  rejected early, far above the hull or with an exploding cell, which counts as
  unstable with ``drop_reason`` rejected_early);
- S.U.N. (MatterGen): stable (e_above_hull <= ``stable_threshold``, 0.1 eV/atom by
  default), unique and novel; the rate is over all generated structures. ``stable``
  and ``stable_strict`` (<= 0) count every relaxed structure, novel or not.
Every row is kept; ``drop_reason`` names the first step it failed, and ``funnel``
counts each step in order, with rates over all generated structures.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from onnes.crystals import row_problems
from onnes.matching import Tolerances, find_duplicates, find_known, reduced_formulas
from onnes.screen.validity import compositional_validity, structural_validity

log = logging.getLogger(__name__)

STEPS = ("generated", "valid", "unique", "novel", "relaxed", "sun")
# The whole campaign's funnel, as the report and its figures count it: the screening
# steps, then candidates the Tc predictor ranked and candidates DFT verified.
CAMPAIGN_STEPS = (*STEPS, "tc_ranked", "dft_verified")
MATCH_STEPS = STEPS[:4]
FINISHED = ("converged", "max_steps", "rejected_early")  # relaxation statuses with an energy and a geometry


def screen(samples: pd.DataFrame, reference: pd.DataFrame, settings: dict, workers: int = 1
           ) -> tuple[pd.DataFrame, dict]:
    table = samples.copy()
    # Rows that cannot describe a crystal (no atoms, Z outside 1..118, NaN, a collapsed or
    # absurd cell) are invalid with their own drop reason; the validity tests see only
    # sane rows.
    problems = row_problems(table)
    sane = problems.reason.isna()
    table["formula"] = ""
    table.loc[sane, "formula"] = reduced_formulas(table[sane])
    table = table.join(structural_validity(table[sane], settings["min_distance"], settings["min_volume"]))
    table["valid_struct"] = table.valid_struct.astype("boolean").fillna(False).astype(bool)
    table["valid_comp"] = compositional_validity(table[sane], settings["oxidation_states"])
    table["valid_comp"] = table.valid_comp.astype("boolean").fillna(False).astype(bool)
    table["valid"] = table.valid_struct & table.valid_comp

    reference_problems = row_problems(reference).reason
    if reference_problems.notna().any():  # novelty is judged against sane rows only
        log.warning("reference: %d rows that describe no crystal left out (%s)", reference_problems.notna().sum(),
                    reference_problems.value_counts().to_dict())
        reference = reference[reference_problems.isna()]
    tol = Tolerances(**settings["matcher"])
    valid_rows = table[table.valid]
    duplicates = find_duplicates(valid_rows, tol, workers)
    table["unique"] = table.valid & ~table.id.isin(duplicates.keys())
    known = find_known(table[table.unique], reference, tol, workers)
    table["novel"] = table.unique & ~table.id.isin(known)

    reasons = pd.Series([None] * len(table), index=table.index, dtype=object)
    reasons[~table.novel] = "known"
    reasons[~table.unique] = "duplicate"
    reasons[~table.valid_comp] = "invalid_composition"
    reasons[~table.valid_struct] = "invalid_structure"
    reasons[~sane] = problems.reason[~sane]
    table["drop_reason"] = reasons
    table["drop_detail"] = problems.detail
    table["duplicate_of"] = table.id.map(duplicates)
    return table, funnel_counts(table, MATCH_STEPS)


def select_for_relaxation(table: pd.DataFrame, select: str, max_structures: int | None) -> pd.DataFrame:
    """The rows relaxation takes: those that passed step ``select`` (valid, unique or
    novel), the first ``max_structures`` of them in table order."""
    chosen = table[table[select].astype(bool)]
    return chosen if max_structures is None else chosen.head(max_structures)


def finish(matched: pd.DataFrame, relaxed: pd.DataFrame, stability: pd.DataFrame, settings: dict
           ) -> tuple[pd.DataFrame, dict]:
    """Join relaxation and hull results to the matched table; S.U.N. and the full funnel.

    ``relaxed`` holds relaxation results (``id``, energies, status, relaxed structure);
    ``stability`` holds hull results with the same index as ``relaxed``. Relaxed
    geometries replace the generated ones; the generated ones stay as ``*_generated``.
    """
    table = matched.copy()
    results = relaxed.join(stability).set_index("id")
    geometry = ["frac_coords", "lattice"]
    for column in geometry:
        table[f"{column}_generated"] = table[column]
    extra = [c for c in results.columns if c not in ("species", *geometry)]
    table = table.join(results[extra], on="id")
    has_geometry = table.id.isin(results.index[results.relax_status.isin(FINISHED)])
    for column in geometry:
        relaxed_geometry = table.id.map(results[column]) if column in results else None
        if relaxed_geometry is not None:
            table.loc[has_geometry, column] = relaxed_geometry[has_geometry]
    threshold = settings["stable_threshold"]
    e_hull = table.get("e_above_hull", pd.Series(np.nan, index=table.index)).astype(float)
    table["relaxed"] = has_geometry
    early = table.get("relax_status", pd.Series(None, index=table.index)).eq("rejected_early")
    table["stable"] = table.relaxed & ~early & (e_hull <= threshold)
    table["stable_strict"] = table.stable & (e_hull <= 0.0)
    table["sun"] = table.stable & table.unique & table.novel
    selected_rows = table.id.isin(relaxed.id)
    reasons = table.drop_reason.copy()
    tail = table.novel & reasons.isna()
    reasons[tail & ~selected_rows] = "not_selected_for_relaxation"
    reasons[tail & selected_rows & ~table.relaxed] = "relax_" + table.relax_status.fillna("missing").astype(str)
    no_hull = table.relaxed & e_hull.isna()
    reasons[tail & no_hull] = "no_hull_reference"
    reasons[tail & table.relaxed & ~no_hull & ~table.stable] = "unstable"
    reasons[tail & early] = "rejected_early"
    table["drop_reason"] = reasons
    funnel = funnel_counts(table, STEPS)
    selected = int(selected_rows.sum())
    funnel["relaxation"] = {
        "select": settings["select"], "selected": selected,
        "status": table.relax_status.dropna().value_counts().to_dict(),
        "converged": int(table["relax_converged"].eq(True).sum()) if "relax_converged" in table else 0,
        "hull_status": table.hull_status.dropna().value_counts().to_dict(),
    }
    total = len(table)
    relaxed_novel = table.relaxed & table.novel
    stable_fraction = float(table.sun[relaxed_novel].mean()) if relaxed_novel.any() else 0.0
    funnel["stability"] = {
        "stable_threshold": threshold,
        "stable": int(table.stable.sum()), "stable_strict": int(table.stable_strict.sum()),
        "sun": int(table.sun.sum()), "sun_strict": int((table.sun & table.stable_strict).sum()),
        "stable_rate": table.stable.sum() / total if total else 0.0,
        "sun_rate": table.sun.sum() / total if total else 0.0,
        "sun_strict_rate": (table.sun & table.stable_strict).sum() / total if total else 0.0,
        # When relaxation took only a sample of the novel structures, this estimate
        # scales the stable fraction of that sample by the novelty rate.
        "sun_rate_estimated": funnel["rates"]["novel"] * stable_fraction,
        # Its 95 % interval: Wilson's score interval of the sample's stable fraction, scaled alike.
        "sun_rate_estimated_ci95": [funnel["rates"]["novel"] * bound for bound in
                                    wilson_interval(int(table.sun[relaxed_novel].sum()), int(relaxed_novel.sum()))],
        "relaxed_novel": int(relaxed_novel.sum()),
        "median_e_above_hull": float(e_hull[table.relaxed].median()) if table.relaxed.any() else None,
    }
    return table, funnel


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (E. B. Wilson, JASA 22, 209 (1927)):
    sound at the small counts and rates near 0 of a relaxed sample, where the normal
    approximation is not. (0, 1) for no trials."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def funnel_counts(table: pd.DataFrame, steps=STEPS) -> dict:
    total = len(table)
    counts = {step: (total if step == "generated" else int(table[step].sum())) for step in steps}
    return {
        "steps": counts,
        "rates": {k: (v / total if total else 0.0) for k, v in counts.items()},
        "valid_struct": int(table.valid_struct.sum()),
        "valid_comp": int(table.valid_comp.sum()),
        "drop_reasons": table.drop_reason.value_counts().to_dict(),
    }
