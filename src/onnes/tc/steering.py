"""Steering comparison: per candidate source, the funnel rates and the share of samples
predicted above each Tc threshold, with 95 % intervals (columns ``_lo``/``_hi``), against an unconditional
counterpart and the training set.

"Predicted above T" is the predictor's classifier at T (P > 0.5) where it has one, else
the expected Tc above T. Denominators (all from one source's own table):
- validity, novelty: over generated samples;
- ``vni_frac_above_T``: over valid, novel samples the predictor calls in-domain;
- ``msun_frac``, ``msun_above_T_frac``: over the novel samples that were relaxed (MSUN is
  only known for those), so the MSUN share with predicted Tc above T counts both at once;
  MSUN at the pre-relaxation level, with strict novelty (funnel.py);
- ``confirmed_frac``, ``confirmed_above_T_frac``: the same at the confirmed level, when
  the confirming MLIP took every pre-relaxation MSUN row of the source (else NaN and
  ``confirmed_complete`` False: a capped confirmation cannot be compared row by row).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from onnes.screen.funnel import wilson_interval
from onnes.tc.predictor import above_column, flag, in_domain


def predicted_above(table: pd.DataFrame, threshold: float) -> pd.Series:
    column = above_column(threshold)
    if column in table:
        return (pd.to_numeric(table[column], errors="coerce") > 0.5).fillna(False)
    return (pd.to_numeric(table["tc_pred_mean"], errors="coerce") > threshold).fillna(False)


def _share(row: dict, name: str, hits: pd.Series, within: pd.Series) -> None:
    count, total = int((hits & within).sum()), int(within.sum())
    row[name] = count / total if total else np.nan
    row[f"{name}_lo"], row[f"{name}_hi"] = wilson_interval(count, total) if total else (np.nan, np.nan)
    row[f"{name}_count"] = count


def _nan_share(row: dict, name: str) -> None:
    row[name] = row[f"{name}_lo"] = row[f"{name}_hi"] = np.nan
    row[f"{name}_count"] = 0


def source_row(name: str, predicted: pd.DataFrame, thresholds: list[float]) -> dict:
    everything = pd.Series(True, index=predicted.index)
    valid, novel, msun = flag(predicted, "valid"), flag(predicted, "novel"), flag(predicted, "msun")
    relaxed_novel = flag(predicted, "relaxed") & novel
    row = {"source": name, "generated": int(len(predicted))}
    _share(row, "validity", valid, everything)
    _share(row, "novelty", novel, everything)
    vni = valid & novel & in_domain(predicted)
    row["valid_novel_in_domain"] = int(vni.sum())
    for threshold in thresholds:
        _share(row, f"vni_frac_above_{threshold:g}K", predicted_above(predicted, threshold), vni)
    row["relaxed_novel"] = int(relaxed_novel.sum())
    _share(row, "msun_frac", msun, relaxed_novel)
    for threshold in thresholds:
        _share(row, f"msun_above_{threshold:g}K_frac", msun & predicted_above(predicted, threshold), relaxed_novel)
    confirmed = flag(predicted, "msun_confirmed")
    sampled = predicted["confirm_relax_status"].notna() if "confirm_relax_status" in predicted else None
    row["confirmed_complete"] = sampled is not None and bool((sampled | ~msun).all())
    for threshold in (None, *thresholds):
        key = "confirmed_frac" if threshold is None else f"confirmed_above_{threshold:g}K_frac"
        hits = confirmed if threshold is None else confirmed & predicted_above(predicted, threshold)
        if row["confirmed_complete"]:
            _share(row, key, hits, relaxed_novel)
        else:
            _nan_share(row, key)
    tc = pd.to_numeric(predicted.tc_pred_mean, errors="coerce")[valid]
    row["valid_median_expected_tc"] = float(tc.median()) if tc.notna().any() else np.nan
    return row


def training_row(name: str, training: pd.DataFrame, thresholds: list[float]) -> dict:
    """Measured Tc of the training structures (in the valid-novel-in-domain slots)."""
    tc = pd.to_numeric(training.tc_K, errors="coerce").dropna()
    row = {"source": name, "generated": int(len(training)), "valid_novel_in_domain": int(len(tc))}
    for threshold in thresholds:
        _share(row, f"vni_frac_above_{threshold:g}K", tc > threshold, pd.Series(True, index=tc.index))
    row["valid_median_expected_tc"] = float(tc.median()) if len(tc) else np.nan
    return row


def ratio_interval(a: int, n1: int, b: int, n2: int, z: float = 1.959964) -> tuple[float, float, float]:
    """Ratio of two binomial proportions (a/n1) / (b/n2) with the Katz log interval
    (Katz et al., Biometrics 34, 469 (1978)); 0.5 is added to every cell when a count is 0."""
    if min(n1, n2) == 0:
        return np.nan, np.nan, np.nan
    if a == 0 or b == 0:
        a, b, n1, n2 = a + 0.5, b + 0.5, n1 + 0.5, n2 + 0.5
    ratio = (a / n1) / (b / n2)
    half = z * np.sqrt(max(1 / a - 1 / n1 + 1 / b - 1 / n2, 0.0))
    return float(ratio), float(ratio * np.exp(-half)), float(ratio * np.exp(half))


def compare(tables: dict[str, pd.DataFrame], training: pd.DataFrame | None, thresholds: list[float],
            pairs: dict[str, str]) -> pd.DataFrame:
    """One row per source (+ the training set). ``pairs`` maps a steered source to its
    unconditional counterpart; for those rows the gains (ratios, with Katz intervals) in
    the valid-novel-in-domain, MSUN and confirmed-MSUN shares above the first threshold,
    and the relative loss of validity, are added."""
    rows = {name: source_row(name, table, thresholds) for name, table in tables.items()}
    first = f"{thresholds[0]:g}K"
    for name, row in rows.items():
        base = rows.get(pairs.get(name, ""))
        for key, total in ((f"vni_frac_above_{first}", "valid_novel_in_domain"),
                           (f"msun_above_{first}_frac", "relaxed_novel"),
                           (f"confirmed_above_{first}_frac", "relaxed_novel")):
            comparable = base and not (np.isnan(row[key]) or np.isnan(base[key]))
            ratio = ratio_interval(row[f"{key}_count"], row[total], base[f"{key}_count"], base[total]) \
                if comparable else (np.nan,) * 3
            row[f"gain_{key}"], row[f"gain_{key}_lo"], row[f"gain_{key}_hi"] = ratio
        row["validity_loss"] = 1 - row["validity"] / base["validity"] if base and base["validity"] > 0 else np.nan
        row["baseline"] = base["source"] if base else None
    frame = pd.DataFrame(list(rows.values()))
    if training is not None:
        frame = pd.concat([frame, pd.DataFrame([training_row("training set (measured Tc)", training, thresholds)])],
                          ignore_index=True)
    return frame
