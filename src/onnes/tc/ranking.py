"""Candidate ranking for the DFT stage: predicted Tc with uncertainty, subject to stability.

Acquisition (upper confidence bound, Srinivas et al. 2010): a = mean + kappa * spread.
kappa > 0 favours candidates the predictor is unsure about (exploration), kappa < 0
the reliably high ones (exploitation). Only the screen's candidates are ranked (``candidate``:
metastable, unique and novel against everything known after a converged relaxation, and
confirmed by the second MLIP when the campaign confirms); every other row keeps its
``drop_reason`` and a NaN rank.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from onnes.crystals import row_problems
from onnes.tc.predictor import TcPredictor, in_domain


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
    return mask & table["tc_pred_mean"].notna().to_numpy()


def rank(table: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """Eligible candidates, best first, with ``tc_acquisition`` and ``tc_rank`` (1 = best);
    at most ``top_k`` rows when set."""
    candidates = table[eligible(table, settings)].copy()
    candidates["tc_acquisition"] = candidates.tc_pred_mean + settings["kappa"] * candidates.tc_pred_std
    candidates = candidates.sort_values(["tc_acquisition", "id"], ascending=[False, True], kind="stable")
    if settings["top_k"]:
        candidates = candidates.head(settings["top_k"])
    candidates["tc_rank"] = np.arange(1, len(candidates) + 1)
    return candidates.reset_index(drop=True)
