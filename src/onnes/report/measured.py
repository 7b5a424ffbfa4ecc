"""What the campaign measured, as the page's tables: generation quality beside the
baselines, the steering comparison, the Tc predictor's held-out figures and the DFT
verifications. Each reads one file a stage wrote and formats it; nothing is recomputed
but Wilson intervals from the counts the stages wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from onnes.screen.funnel import wilson_interval

NOT_RUN = "not run in this campaign"


def percent(fraction, low=None, high=None, count=None) -> str | None:
    """'59.0 % [53.4-64.4] (177)': a fraction with its 95 % interval and count."""
    if fraction is None or pd.isna(fraction):
        return None
    text = f"{100 * fraction:.1f} %"
    if low is not None and pd.notna(low) and pd.notna(high):
        text += f" [{100 * low:.1f}-{100 * high:.1f}]"
    if count is not None and pd.notna(count):
        text += f" ({int(count)})"
    return text


def _rate(successes, trials) -> str | None:
    if trials is None or pd.isna(trials) or not trials or pd.isna(successes):
        return None
    low, high = wilson_interval(int(successes), int(trials))
    return percent(successes / trials, low, high, successes)


def _number(value, digits: int = 3) -> str | None:
    return None if value is None or pd.isna(value) else f"{value:.{digits}g}"


def _distance(row: pd.Series, key: str) -> str | None:
    """A Wasserstein distance with its 95 % bootstrap interval when the summary has one."""
    value, low, high = row.get(key), row.get(f"{key}_low"), row.get(f"{key}_high")
    if value is None or pd.isna(value):
        return None
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return _number(value)
    return f"{_number(value)} [{_number(low)}-{_number(high)}]"


def quality_table(summary_path: Path | None, sources: list[str]) -> pd.DataFrame:
    """Generation quality per source as the literature defines it (CDVAE/DiffCSP metrics:
    structural and compositional validity, COV-R/P, Wasserstein distances of density and
    number of elements, CSP match rate and RMSE), with 95 % Wilson intervals on the
    rates and bootstrap intervals on the distances, models and baselines in one table
    (SUN and MSUN: the stability table)."""
    if summary_path is None or not Path(summary_path).exists():
        return pd.DataFrame()
    summary = pd.read_csv(summary_path).set_index("source")
    rows = []
    for source in sources:
        if source not in summary.index:
            continue
        s = summary.loc[source]
        generated = s.generated
        rows.append({
            "source": source, "generated": int(generated),
            "struct. valid": _rate(round(s.valid_struct_rate * generated), generated),
            "comp. valid": _rate(round(s.valid_comp_rate * generated), generated),
            "valid": _rate(s.valid, generated), "novel": _rate(s.novel, generated),
            "COV-R": _number(s.cov_recall), "COV-P": _number(s.cov_precision),
            "W(density)": _distance(s, "wdist_density"), "W(#elements)": _distance(s, "wdist_num_elements"),
            "CSP match": _number(s.csp_match_rate), "CSP RMSE": _number(s.csp_rmse),
        })
    return pd.DataFrame(rows)


def metrics_protocol(results: Path, sources: list[str]) -> str:
    """The structure counts behind COV and the distances (each source's metrics.json)."""
    for source in sources:
        path = results / f"screen/{source}/metrics.json"
        if path.exists():
            return json.loads(path.read_text()).get("protocol", "")
    return ""


def steering_table(steering_path: Path | None) -> pd.DataFrame:
    """Guided against unguided sampling (tc/steering.csv): among valid, novel, in-domain
    samples the share the predictor puts above 10 K with P > 0.5, and its gain over the
    unguided baseline (Katz 95 % interval); the same among MSUN and confirmed MSUN rows."""
    if steering_path is None or not Path(steering_path).exists():
        return pd.DataFrame()
    return steering_table_from(pd.read_csv(steering_path))


def steering_table_from(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, s in table.iterrows():
        def gain(column: str) -> str | None:
            value = s.get(column)
            if value is None or pd.isna(value):
                return None
            return f"{value:.2f}x [{s[column + '_lo']:.2f}-{s[column + '_hi']:.2f}]"

        def share(column: str) -> str | None:
            return percent(s[column], s[column + "_lo"], s[column + "_hi"], s.get(column + "_count"))

        rows.append({
            "source": s.source, "against": s.get("baseline") if pd.notna(s.get("baseline")) else None,
            "valid": percent(s.validity, s.validity_lo, s.validity_hi),
            "valid novel in-domain": None if pd.isna(s.valid_novel_in_domain) else int(s.valid_novel_in_domain),
            "P(Tc > 10 K) > 0.5": share("vni_frac_above_10K"), "gain": gain("gain_vni_frac_above_10K"),
            "MSUN above 10 K": share("msun_above_10K_frac"), "MSUN gain": gain("gain_msun_above_10K_frac"),
            "confirmed above 10 K": share("confirmed_above_10K_frac"),
            "confirmed gain": gain("gain_confirmed_above_10K_frac"),
            "median expected Tc (K)": _number(s.valid_median_expected_tc),
        })
    return pd.DataFrame(rows)


def predictor_table(metrics_path: Path | None) -> pd.DataFrame:
    """The Tc predictor's held-out figures (compositions never trained on), named by what
    they measure, from tc/predictor/metrics.json."""
    if metrics_path is None or not Path(metrics_path).exists():
        return pd.DataFrame()
    m = json.loads(Path(metrics_path).read_text())
    regression, classification = m["regression_superconductors"], m["classification"]
    rows = [("held-out split", f"{m['test_rows']} rows, {m['test_groups']} compositions ({m['split']}; "
                               f"{m['shared_groups']} shared with training)"),
            ("Tc if superconducting: R²", f"{regression['r2']:.3f} ({regression['count']} superconductors)"),
            ("Tc if superconducting: MAE", f"{regression['mae']:.2f} K"),
            ("Tc if superconducting: R² of log(1 + Tc)", f"{regression['r2_log1p']:.3f}")]
    for key, label in (("superconducting", "superconducting or not"), ("above_10K", "Tc above 10 K")):
        if key in classification:
            c = classification[key]
            rows.append((f"{label}: accuracy / ROC-AUC", f"{c['accuracy']:.3f} / {c['roc_auc']:.3f} "
                                                         f"({c['count']} rows, {c['positives']} positive)"))
    for level, entry in m["intervals"].items():
        if isinstance(entry, dict) and "coverage" in entry:
            rows.append((f"{level} % interval: coverage (median width)",
                         f"{100 * entry['coverage']:.1f} % ({entry['median_width_K']:.1f} K)"))
    for name, label in (("dft_band_insulators", "held-out DFT band insulators"),
                        ("measured_non_superconductors", "held-out measured 0 K compositions")):
        entry = m.get("negatives_held_out", {}).get(name)
        if entry and entry.get("count"):
            low, high = entry["p_superconducting_above_0.5_ci95"]
            rows.append((f"{label}: P(superconducting) > 0.5",
                         percent(entry["p_superconducting_above_0.5"], low, high, entry["count"])
                         .replace(f"({entry['count']})", f"of {entry['count']}")))
    return pd.DataFrame(rows, columns=["figure", "value"])


def dft_table(dft: pd.DataFrame | None) -> pd.DataFrame:
    """The candidates DFT ran on, in slot order: outcome, energy and what the run did."""
    if dft is None or not len(dft):
        return pd.DataFrame()
    ran = dft[dft.dft_slot >= 0].sort_values([c for c in ("round", "dft_slot") if c in dft])
    out = pd.DataFrame({
        **({"round": ran["round"].astype(int)} if "round" in ran and ran["round"].gt(0).any() else {}),
        "slot": ran.dft_slot.astype(int), "formula": ran.formula, "source": ran.source, "id": ran.id,
        "code": ran.get("dft_code"), "calculation": ran.get("dft_calculation"), "status": ran.dft_status,
        "energy (eV/atom)": [None if pd.isna(e) else f"{e:.4f}" for e in ran.get("dft_energy_per_atom",
                                                                                  pd.Series(np.nan, index=ran.index))],
        "MLIP E above hull (eV/atom)": ran.get("e_above_hull"),
        # a code off the MP footing: above its own decomposition products at the same settings
        **({"DFT E above its products (eV/atom)": ran["e_above_hull_dft_local"],
            "local hull": ran.get("dft_local_status")} if "e_above_hull_dft_local" in ran else {}),
        "expected Tc (K)": ran.get("tc_pred_mean"),
        "minutes": ran.get("dft_seconds", pd.Series(np.nan, index=ran.index)) / 60,
        "error": ran.get("dft_error"),
    })
    # Verified first (the campaign's best evidence), then the others in slot order.
    order = [c for c in ("round", "status", "slot") if c in out]
    return out.sort_values(order, key=lambda c: c.ne("success") if c.name == "status" else c)
