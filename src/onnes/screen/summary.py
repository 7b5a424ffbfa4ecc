"""One comparison table of every model and baseline: funnel counts and rates,
stability, and the literature metrics (the table published papers report)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

METRIC_COLUMNS = ("cov_recall", "cov_precision", "wdist_density", "wdist_num_elements", "csp_match_rate",
                  "csp_rmse")


def summary_row(name: str, funnel: dict, metrics: dict) -> dict:
    row: dict = {"source": name}
    for step, count in funnel["steps"].items():
        row[step] = count
    for step, rate in funnel["rates"].items():
        if step != "generated":
            row[f"{step}_rate"] = rate
    generated = funnel["steps"]["generated"]
    for key in ("valid_struct", "valid_comp"):
        row[f"{key}_rate"] = funnel[key] / generated if generated else 0.0
    stability = funnel.get("stability", {})
    for key in ("relaxed_novel", "unconverged", "diverged", "known_after_relaxation", "median_e_above_hull"):
        row[key] = stability.get(key)
    # SUN and MSUN at both levels: count, fraction of the relaxed novel sample with its
    # 95 % interval, and the implied rate per generated structure
    for level, label in (("pre_relaxation", "pre"), ("confirmed", "confirmed")):
        for kind in ("sun", "msun"):
            entry = stability.get(level, {}).get(kind, {})
            name = f"{kind}_{label}"
            low, high = entry.get("fraction_ci95") or (None, None)
            row.update({name: entry.get("count"), f"{name}_fraction": entry.get("fraction"),
                        f"{name}_fraction_low": low, f"{name}_fraction_high": high, f"{name}_rate": entry.get("rate")})
    for key in METRIC_COLUMNS:
        row[key] = metrics.get(key)
    for key in ("wdist_density", "wdist_num_elements"):  # 95 % bootstrap intervals
        row[f"{key}_low"], row[f"{key}_high"] = metrics.get(f"{key}_ci95") or (None, None)
    return row


def summarize(names: list[str], funnel_paths: list[str | Path], metric_paths: list[str | Path]) -> pd.DataFrame:
    rows = []
    for name, funnel_path, metric_path in zip(names, funnel_paths, metric_paths, strict=True):
        funnel = json.loads(Path(funnel_path).read_text())
        metrics = json.loads(Path(metric_path).read_text())
        rows.append(summary_row(name, funnel, metrics))
    return pd.DataFrame(rows)
