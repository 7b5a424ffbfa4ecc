"""The screening funnel: validity -> uniqueness -> novelty -> MLIP pre-relaxation ->
stability on the convex hull -> confirmation by a second MLIP; SUN and MSUN.

Definitions follow the literature so rates compare with published tables:
- valid: structurally (distances >= 0.5 A, volume >= 0.1 A^3) and compositionally (SMACT)
  valid (CDVAE, Xie et al. 2022); a row that describes no crystal at all
  (``crystals.row_problem``: no atoms, an atomic number outside 1..118, NaN, a collapsed
  or absurd cell) is invalid with that drop reason and a ``drop_detail``;
- unique: not StructureMatcher-equivalent to an earlier valid generated structure;
- novel: unique and matching no training structure (MatterGen, Zeni et al. 2025),
  StructureMatcher ltol 0.2, stol 0.3, angle_tol 5 by default, on the generated geometry;
- relaxed: selected for the pre-relaxation (``relax.select``, at most
  ``relax.max_structures``) and relaxed to an end (converged, stopped at ``max_steps``,
  rejected early far above the hull or with an exploding cell, or diverged);
- converged: the relaxation met ``relax.fmax`` within ``relax.max_steps``. Only converged
  structures are judged stable; the others are counted apart (``unconverged``);
- after relaxation, novelty is judged again on the relaxed geometry, as MatterGen does
  (relaxation can move a sample onto a known crystal): ``novel_relaxed`` against the
  training split (the literature's reference), ``novel_known`` against every split of
  every data set the campaign curated (built-in, combined, the user's): the strict one;
  ``known_as`` names the crystal matched, ``known_composition`` flags a reduced formula
  that is in the MP hull table;
- MSUN: metastable (e_above_hull <= ``stable_threshold``, 0.1 eV/atom), unique, novel and
  novel against everything known; SUN the same at e_above_hull <= 0 (the pair recent
  papers report; LeMat-GenBench counts the band 0 < E_hull <= 0.1 apart: ``metastable``);
- confirmed: an MSUN row relaxed again by the confirming MLIP (``confirm``) to its own
  convergence and still within the threshold on the same hull; ``msun_confirmed`` and
  ``sun_confirmed`` need both potentials to agree. ``candidate`` is what later stages
  take: ``msun_confirmed`` when a confirming MLIP is configured, else ``msun``.
Every row is kept; ``drop_reason`` names the first step it failed, and ``funnel``
counts each step in order, with rates over all generated structures.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from onnes.crystals import row_problems
from onnes.matching import Tolerances, find_duplicates, find_known, find_matches, reduced_formulas
from onnes.screen.validity import compositional_validity, structural_validity

log = logging.getLogger(__name__)

STEPS = ("generated", "valid", "unique", "novel", "relaxed", "converged", "msun")
# The whole campaign's funnel, as the report and its figures count it: the screening
# steps, then candidates the Tc predictor ranked and candidates DFT verified.
CAMPAIGN_STEPS = (*STEPS, "confirmed", "tc_ranked", "dft_verified")
MATCH_STEPS = STEPS[:4]
# relaxation statuses with an energy and a geometry
FINISHED = ("converged", "max_steps", "rejected_early", "diverged")


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

    reference = _sane(reference, "reference")
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


def judge_prerelaxed(matched: pd.DataFrame, relaxed: pd.DataFrame, stability: pd.DataFrame,
                     train: pd.DataFrame, known: pd.DataFrame, known_formulas: set[str], settings: dict,
                     workers: int = 1) -> pd.DataFrame:
    """The matched table after the pre-relaxation: relaxation and hull results joined,
    relaxed geometries in the crystal columns (the generated ones as ``*_generated``),
    novelty judged again on the relaxed geometry, and the pre-relaxation verdicts
    (``stable``, ``msun``, ``sun``, ...). ``stability`` holds hull results with the same
    index as ``relaxed``; ``known`` every structure the campaign knows."""
    table = matched.copy()
    results = relaxed.join(stability).set_index("id")
    geometry = ["frac_coords", "lattice"]
    for column in geometry:
        table[f"{column}_generated"] = table[column]
    extra = [c for c in results.columns if c not in ("species", *geometry)]
    table = table.join(results[extra], on="id")
    has_geometry = table.id.isin(results.index[results.relax_status.isin(FINISHED)])
    for column in geometry:
        if column in results:
            table.loc[has_geometry, column] = table.id.map(results[column])[has_geometry]
    status = table.get("relax_status", pd.Series(None, index=table.index, dtype=object))
    e_hull = table.get("e_above_hull", pd.Series(np.nan, index=table.index)).astype(float)
    table["relaxed"] = has_geometry
    table["converged"] = has_geometry & status.eq("converged")

    # novelty on the relaxed geometry: against the training split, and against everything known
    tol = Tolerances(**settings["matcher"])
    judged = table[table.relaxed & table.unique & table.novel]
    in_train = find_matches(judged, _sane(train, "train"), tol, workers)
    in_known = find_matches(judged, _sane(known, "known"), tol, workers)
    table["novel_relaxed"] = table.id.isin(judged.id) & ~table.id.isin(in_train.keys())
    table["novel_known"] = table.id.isin(judged.id) & ~table.id.isin(in_known.keys())
    table["known_as"] = table.id.map(in_known)
    table["known_composition"] = table.formula.isin(known_formulas)

    threshold = settings["stable_threshold"]
    table["stable"] = table.converged & (e_hull <= threshold)
    table["stable_strict"] = table.stable & (e_hull <= 0.0)
    table["msun"] = table.stable & table.unique & table.novel & table.novel_known
    table["sun"] = table.msun & table.stable_strict

    reasons = table.drop_reason.copy()
    tail = table.novel & reasons.isna()
    selected = table.id.isin(relaxed.id)
    reasons[tail & ~selected] = "not_selected_for_relaxation"
    reasons[tail & selected & ~table.relaxed] = "relax_" + status.fillna("missing").astype(str)
    no_hull = table.relaxed & e_hull.isna()
    reasons[tail & table.relaxed & ~table.converged] = "relax_" + status.astype(str)  # max_steps, diverged, ...
    reasons[tail & status.eq("rejected_early")] = "rejected_early"
    reasons[tail & table.converged & no_hull] = "no_hull_reference"
    reasons[tail & table.converged & ~no_hull & ~table.stable] = "unstable"
    reasons[tail & table.stable & ~table.novel_known] = "known_after_relaxation"
    table["drop_reason"] = reasons
    return table


def _sane(reference: pd.DataFrame, name: str) -> pd.DataFrame:
    problems = row_problems(reference).reason
    if problems.notna().any():  # novelty is judged against sane rows only
        log.warning("%s reference: %d rows that describe no crystal left out (%s)", name, problems.notna().sum(),
                    problems.value_counts().to_dict())
        return reference[problems.isna()]
    return reference


CONFIRM_COLUMNS = ("relax_status", "relax_error", "energy", "energy_per_atom", "mlip", "fmax", "relax_steps",
                   "frac_coords", "lattice", "e_form_per_atom", "e_above_hull", "decomposition", "hull_status")


def finish(prerelaxed: pd.DataFrame, settings: dict, confirmed: pd.DataFrame | None = None,
           confirmed_stability: pd.DataFrame | None = None, protocol: dict | None = None
           ) -> tuple[pd.DataFrame, dict]:
    """The screened table and its funnel: the pre-relaxation verdicts of
    :func:`judge_prerelaxed`, the confirming relaxation's results (``confirmed``, hull
    results in ``confirmed_stability``, same index) as ``confirm_*`` columns, SUN and MSUN
    at both levels with intervals, and the ``protocol`` they were measured under."""
    table = prerelaxed.copy()
    threshold = settings["stable_threshold"]
    confirming = confirmed is not None
    if confirming:
        results = confirmed.join(confirmed_stability).set_index("id")
        for column in CONFIRM_COLUMNS:
            table[f"confirm_{column}"] = table.id.map(results[column]) if column in results else None
        e_confirm = table.confirm_e_above_hull.astype(float)
        table["confirm_converged"] = table.confirm_relax_status.eq("converged")
        table["msun_confirmed"] = table.msun & table.confirm_converged & (e_confirm <= threshold)
        table["sun_confirmed"] = table.sun & table.msun_confirmed & (e_confirm <= 0.0)
        reasons = table.drop_reason.copy()
        sampled = table.id.isin(results.index)
        reasons[table.msun & ~sampled] = "not_selected_for_confirmation"
        reasons[table.msun & sampled & ~table.confirm_converged] = \
            "confirm_" + table.confirm_relax_status.fillna("missing").astype(str)
        reasons[table.msun & table.confirm_converged & ~table.msun_confirmed] = "unstable_confirmed"
        table["drop_reason"] = reasons
    table["candidate"] = table.msun_confirmed if confirming else table.msun
    steps = (*STEPS, "confirmed") if confirming else STEPS
    funnel = funnel_counts(table.assign(confirmed=table.get("msun_confirmed")), steps)
    funnel["relaxation"] = {
        "select": settings["select"], "selected": int(table.relax_status.notna().sum()),
        "status": table.relax_status.dropna().value_counts().to_dict(),
        "hull_status": table.hull_status.dropna().value_counts().to_dict(),
    }
    funnel["stability"] = stability_summary(table, threshold, confirming)
    funnel["protocol"] = protocol or {}
    return table, funnel


def _level(count: int, sample: int, novel_rate: float) -> dict:
    """A fraction of the relaxed novel sample with its Wilson interval, and the rate over
    all generated structures it implies (the sample's fraction times the novelty rate,
    exact when every novel structure was relaxed)."""
    fraction = count / sample if sample else 0.0
    low, high = wilson_interval(count, sample)
    return {"count": int(count), "fraction": fraction, "fraction_ci95": [low, high],
            "rate": novel_rate * fraction, "rate_ci95": [novel_rate * low, novel_rate * high]}


def _confirmed_level(passed: int, sampled: int, pre: int, sample: int, novel_rate: float) -> dict:
    """A confirmed fraction of the relaxed novel sample when only ``sampled`` of the ``pre``
    pre-relaxation rows were confirmed: (pre / sample) x (passed / sampled), with the
    product's interval by the MOVER method on the log scale (Donner & Zou, Stat. Methods
    Med. Res. 21, 347, 2012) from both Wilson intervals. Exact Wilson when all were confirmed."""
    if sampled >= pre:
        return {**_level(passed, sample, novel_rate), "confirmed_of": [int(sampled), int(pre)]}
    if sampled == 0:  # none of them confirmed: no estimate, only the pre-relaxation bound
        high = wilson_interval(pre, sample)[1]
        return {"count": 0, "fraction": None, "fraction_ci95": [0.0, high], "rate": None,
                "rate_ci95": [0.0, novel_rate * high], "confirmed_of": [0, int(pre)]}
    p1, p2 = (pre / sample if sample else 0.0), (passed / sampled if sampled else 0.0)
    (l1, u1), (l2, u2) = wilson_interval(pre, sample), wilson_interval(passed, sampled)
    fraction = p1 * p2
    if fraction > 0:
        log1, log2 = np.log(p1), np.log(p2)
        low = np.exp(log1 + log2 - np.hypot(log1 - np.log(max(l1, 1e-300)), log2 - np.log(max(l2, 1e-300))))
        high = np.exp(log1 + log2 + np.hypot(np.log(u1) - log1, np.log(u2) - log2))
    else:  # nothing passed: the upper bound of the product of the upper bounds
        low, high = 0.0, u1 * u2
    # what the interval would be had every pre-relaxation row been confirmed at this pass rate
    uncapped = wilson_interval(int(round(fraction * sample)), sample)
    return {"count": int(passed), "fraction": fraction, "fraction_ci95": [float(low), float(min(high, 1.0))],
            "rate": novel_rate * fraction, "rate_ci95": [novel_rate * low, novel_rate * min(high, 1.0)],
            "confirmed_of": [int(sampled), int(pre)], "fraction_ci95_if_all_confirmed": list(uncapped)}


def stability_summary(table: pd.DataFrame, threshold: float, confirming: bool) -> dict:
    """SUN and MSUN (and the metastable band between) over the relaxed novel sample, at
    the pre-relaxation level and, when confirming, the confirmed level; relaxation
    outcomes counted apart; the two MLIPs' agreement."""
    e_hull = table.e_above_hull.astype(float)
    total = len(table)
    sample = table.relaxed & table.unique & table.novel  # the relaxed novel structures
    n_sample = int(sample.sum())
    novel_rate = float(table.novel.sum()) / total if total else 0.0
    metastable = table.msun & ~table.sun
    status = table.relax_status
    out = {
        "stable_threshold": threshold,
        "relaxed_novel": n_sample,
        "converged": int((sample & table.converged).sum()),
        "unconverged": int((sample & status.eq("max_steps")).sum()),
        "unconverged_within_threshold": int((sample & status.eq("max_steps") & (e_hull <= threshold)).sum()),
        "rejected_early": int((sample & status.eq("rejected_early")).sum()),
        "diverged": int((sample & status.eq("diverged")).sum()),
        "known_after_relaxation": int((sample & table.stable & ~table.novel_known).sum()),
        "known_composition_among_msun": int((table.msun & table.known_composition).sum()),
        "stable": int(table.stable.sum()), "stable_strict": int(table.stable_strict.sum()),
        "median_e_above_hull": float(e_hull[table.converged].median()) if table.converged.any() else None,
        "pre_relaxation": {
            "sun": _level(int(table.sun.sum()), n_sample, novel_rate),
            "msun": _level(int(table.msun.sum()), n_sample, novel_rate),
            "metastable": _level(int(metastable.sum()), n_sample, novel_rate),
            # the literature's looser novelty (training split only), for papers that use it
            "msun_train_novelty": _level(int((table.stable & table.unique & table.novel_relaxed).sum()),
                                         n_sample, novel_rate),
        },
    }
    if confirming:
        sampled = table.confirm_relax_status.notna()
        confirmed_metastable = table.msun_confirmed & ~table.sun_confirmed
        n_msun, n_sun = int(table.msun.sum()), int(table.sun.sum())
        out["confirmed"] = {
            "sun": _confirmed_level(int(table.sun_confirmed.sum()), int((sampled & table.sun).sum()), n_sun,
                                    n_sample, novel_rate),
            "msun": _confirmed_level(int(table.msun_confirmed.sum()), int(sampled.sum()), n_msun, n_sample,
                                     novel_rate),
            "metastable": _confirmed_level(int(confirmed_metastable.sum()), int(sampled.sum()), n_msun, n_sample,
                                           novel_rate),
            "sampled": int(sampled.sum()),
            "converged": int(table.confirm_converged.sum()),
            "status": table.confirm_relax_status.dropna().value_counts().to_dict(),
        }
        out["agreement"] = agreement(table[sampled & table.confirm_converged], threshold)
    return out


def agreement(both: pd.DataFrame, threshold: float) -> dict:
    """The two MLIPs on the rows both relaxed to convergence: 2 x 2 counts at E_hull <= 0
    and at the threshold (pre-relaxation rows, confirming columns), and the energy shifts."""
    pre, confirm = both.e_above_hull.astype(float), both.confirm_e_above_hull.astype(float)
    shift = (confirm - pre).dropna()

    def table_at(limit: float) -> dict:
        a, b = pre <= limit, confirm <= limit
        return {"both": int((a & b).sum()), "pre_only": int((a & ~b).sum()), "confirm_only": int((~a & b).sum()),
                "neither": int((~a & ~b).sum())}

    return {"rows": int(len(both)), "at_0": table_at(0.0), f"at_{threshold:g}": table_at(threshold),
            "shift_median": float(shift.median()) if len(shift) else None,
            "shift_mean_abs": float(shift.abs().mean()) if len(shift) else None}


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
