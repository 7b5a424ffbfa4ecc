"""Candidate ranking for the DFT stage: predicted Tc with uncertainty, subject to stability.

Only the screen's candidates are ranked (``candidate``: metastable, unique and novel
against everything known after a converged relaxation, and confirmed by the second MLIP
when the campaign confirms); every other row keeps its ``drop_reason`` and a NaN rank.
Candidates the metallicity gate calls band insulators and compositions superconducting
only under pressure are left out by default.

Order: in-domain candidates first (a prediction far from every training composition
is an extrapolation, and the spread of an ensemble of trees does not grow there), then
by the acquisition, best first:
- ``lower`` (default): P(superconducting) x the lower end of the widest conformal
  interval: high only where the predictor is confident;
- ``mean``: the expected Tc, P(superconducting) x Tc-if-superconducting;
- ``ucb``: mean + kappa * spread (upper confidence bound, Srinivas et al. 2010) minus
  ``ood_penalty`` K per unit of OOD score above 1: exploration, for campaigns that can
  afford to verify surprises.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from onnes.crystals import row_problems
from onnes.tc.physics import high_pressure_mask
from onnes.tc.predictor import TcPredictor, flag, in_domain


def predict_candidates(screened: pd.DataFrame, predictor: TcPredictor) -> pd.DataFrame:
    """The screened table with Tc predictions on its valid rows (relaxed geometry where
    the row was relaxed: the funnel stores it in the crystal columns)."""
    out = screened.copy()
    valid = out["valid"].fillna(False).astype(bool).to_numpy()
    valid &= row_problems(out).reason.isna().to_numpy()  # the shared row check: no Tc for a broken row
    # Invalid rows get no prediction: NaN, and <NA> for the out-of-domain flag.
    predictions = predictor.predict(out[valid]).reindex(out.index)
    for column in predictions.columns:
        out[column] = predictions[column]
    return out


def eligible(table: pd.DataFrame, settings: dict) -> np.ndarray:
    mask = table["candidate"].fillna(False).astype(bool).to_numpy()
    if settings["max_e_above_hull"] is not None:
        mask &= (table["e_above_hull"] <= settings["max_e_above_hull"]).fillna(False).to_numpy()
    if settings["exclude_ood"]:
        mask &= in_domain(table).to_numpy()
    if settings["exclude_insulators"]:
        mask &= ~flag(table, "tc_insulator").to_numpy()
    if settings["exclude_high_pressure"]:
        mask &= ~high_pressure_mask(table["formula"]).to_numpy()
    return mask & table["tc_pred_mean"].notna().to_numpy()


def lowest_bound_column(table: pd.DataFrame) -> str:
    """The lower end of the widest conformal interval in the table (tc_lo_90 over tc_lo_68)."""
    columns = [c for c in table.columns if c.startswith("tc_lo_")]
    return max(columns, key=lambda c: int(c.removeprefix("tc_lo_")))


def acquisition(table: pd.DataFrame, settings: dict) -> pd.Series:
    if settings["acquisition"] == "lower":
        return table.tc_p_superconducting * table[lowest_bound_column(table)]
    if settings["acquisition"] == "mean":
        return table.tc_pred_mean
    excess = (table.tc_ood_score - 1.0).clip(lower=0.0).fillna(0.0)
    return table.tc_pred_mean + settings["kappa"] * table.tc_pred_std - settings["ood_penalty"] * excess


def sort_candidates(table: pd.DataFrame, ties: list[str]) -> pd.DataFrame:
    """Best first: by ``tc_tier`` (0 in-domain, 1 out-of-domain when the ranking puts
    in-domain first), then the acquisition, then the expected Tc (a lower bound of 0 K
    is common), then ``ties`` ascending. The one order of a source's ranking, the
    pooled DFT selection and the report."""
    keys = [c for c in ("tc_tier", "tc_acquisition", "tc_pred_mean") if c in table] + ties
    ascending = [c == "tc_tier" for c in keys[: len(keys) - len(ties)]] + [True] * len(ties)
    return table.sort_values(keys, ascending=ascending, kind="stable")


def rank(table: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """Eligible candidates, best first, with ``tc_tier``, ``tc_acquisition`` and
    ``tc_rank`` (1 = best); at most ``top_k`` rows when set."""
    candidates = table[eligible(table, settings)].copy()
    candidates["tc_acquisition"] = acquisition(candidates, settings)
    candidates["tc_tier"] = (~in_domain(candidates)).astype(int) if settings["in_domain_first"] else 0
    candidates = sort_candidates(candidates, ["id"])
    if settings["top_k"]:
        candidates = candidates.head(settings["top_k"])
    candidates["tc_rank"] = np.arange(1, len(candidates) + 1)
    return candidates.reset_index(drop=True)
