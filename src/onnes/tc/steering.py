"""Steering comparison: the predicted-Tc distribution of each candidate source against
unconditional sampling and the training set, at equal sample counts."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _distribution(tc: pd.Series, thresholds: list[float], prefix: str) -> dict:
    values = pd.to_numeric(tc, errors="coerce").dropna()
    row = {f"{prefix}_count": int(len(values)),
           f"{prefix}_median_tc": float(values.median()) if len(values) else np.nan}
    for threshold in thresholds:
        row[f"{prefix}_frac_above_{threshold:g}K"] = float((values > threshold).mean()) if len(values) else np.nan
    return row


def source_row(name: str, predicted: pd.DataFrame, thresholds: list[float]) -> dict:
    valid = predicted["valid"].fillna(False).astype(bool)
    sun = predicted["sun"].fillna(False).astype(bool)
    row = {"source": name, "generated": int(len(predicted)),
           "validity": float(valid.mean()) if len(predicted) else np.nan}
    row.update(_distribution(predicted.tc_pred_mean[valid], thresholds, "valid"))
    row.update(_distribution(predicted.tc_pred_mean[sun], thresholds, "sun"))
    row["valid_ood_fraction"] = float(predicted.tc_ood[valid].astype(float).mean()) if valid.any() else np.nan
    return row


def training_row(name: str, training: pd.DataFrame, thresholds: list[float]) -> dict:
    """Measured Tc of the training structures (in both distribution slots)."""
    row = {"source": name, "generated": int(len(training)), "validity": 1.0}
    row.update(_distribution(training.tc_K, thresholds, "valid"))
    row.update(_distribution(training.tc_K, thresholds, "sun"))
    row["valid_ood_fraction"] = np.nan
    return row


def compare(tables: dict[str, pd.DataFrame], training: pd.DataFrame | None, thresholds: list[float],
            pairs: dict[str, str]) -> pd.DataFrame:
    """One row per source (+ the training set). ``pairs`` maps a steered source to its
    unconditional counterpart; for those rows the gain in the S.U.N. fraction above the
    first threshold and the relative loss of validity are added."""
    rows = [source_row(name, table, thresholds) for name, table in tables.items()]
    if training is not None:
        rows.append(training_row("training set (measured Tc)", training, thresholds))
    frame = pd.DataFrame(rows)
    key = f"sun_frac_above_{thresholds[0]:g}K"
    frame["baseline"] = frame.source.map(pairs)
    by_source = frame.set_index("source")
    gains, losses = [], []
    for _, row in frame.iterrows():
        base = row["baseline"]
        if isinstance(base, str) and base in by_source.index:
            reference = by_source.loc[base]
            gains.append(row[key] / reference[key] if reference[key] > 0 else np.inf if row[key] > 0 else np.nan)
            losses.append(1 - row["validity"] / reference["validity"] if reference["validity"] > 0 else np.nan)
        else:
            gains.append(np.nan)
            losses.append(np.nan)
    frame[f"gain_{key}"] = gains
    frame["validity_loss"] = losses
    return frame
