"""Campaign outputs -> the report's tables: the funnel, the candidates and per-structure
descriptors. Reads the output layout (docs/architecture.md) under ``results/{campaign}``; computes nothing
that a stage already wrote, except descriptors for plotting (density, space group)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from ase.data import atomic_masses

from onnes import crystals
from onnes.report.measured import percent
from onnes.screen.funnel import CAMPAIGN_STEPS
from onnes.tc.ranking import sort_candidates

FUNNEL_STEPS = list(CAMPAIGN_STEPS)
# g/cm^3 from amu/A^3.
AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660

CANDIDATE_COLUMNS = ["rank", "source", "id", "formula", "space_group", "space_group_tight", "num_sites",
                     "e_above_hull", "confirm_e_above_hull", "hull_context",
                     "tc_pred_mean", "tc_pred_std", "tc_p_superconducting", "tc_lo_90", "tc_hi_90", "tc_ood",
                     "tc_ood_score", "tc_p_insulator", "tc_nearest_superconductors", "tc_tier", "tc_acquisition",
                     "dft_status",
                     "dft_note", "dft_energy_per_atom", "dft_volume_change"]


def funnel_table(results: Path, sources: list[str], dft: pd.DataFrame | None) -> pd.DataFrame:
    """One row per model or baseline: counts at every funnel step, in FUNNEL_STEPS order."""
    rows = []
    for source in sources:
        steps = json.loads((results / f"screen/{source}/funnel.json").read_text())["steps"]
        ranked_path = results / f"tc/{source}/ranked.parquet"
        tc_ranked = None
        if ranked_path.exists():
            ranked = crystals.read_table(ranked_path, columns=["tc_pred_mean"])
            tc_ranked = int(ranked.tc_pred_mean.notna().sum())
        verified = None
        if dft is not None:
            verified = int(((dft.source == source) & (dft.dft_status == "success")).sum())
        rows.append({**{k: steps.get(k) for k in CAMPAIGN_STEPS}, "source": source, "tc_ranked": tc_ranked,
                     "dft_verified": verified})
    return pd.DataFrame(rows, columns=["source", *FUNNEL_STEPS]).astype({k: "Int64" for k in FUNNEL_STEPS})


def _interval(entry: dict | None) -> str | None:
    """'fraction [low-high] (count)' of a SUN/MSUN entry of funnel.json, in percent."""
    if not entry:
        return None
    low, high = entry["fraction_ci95"]
    if entry["fraction"] is None:  # a capped confirmation that took none of these rows
        return f"not estimated (<= {100 * high:.1f} %)"
    return percent(entry["fraction"], low, high, entry["count"])


def stability_table(results: Path, sources: list[str]) -> tuple[pd.DataFrame, dict]:
    """SUN and MSUN per source at the pre-relaxation and confirmed levels, as fractions of
    the relaxed novel sample with 95 % intervals and counts, beside the relaxation
    outcomes counted apart; and the first source's protocol block (one campaign, one protocol)."""
    rows, protocol = [], {}
    for source in sources:
        funnel = json.loads((results / f"screen/{source}/funnel.json").read_text())
        stability = funnel.get("stability", {})
        protocol = protocol or funnel.get("protocol", {})
        pre, confirmed = stability.get("pre_relaxation", {}), stability.get("confirmed", {})
        rows.append({"source": source, "relaxed novel": stability.get("relaxed_novel"),
                     "unconverged": stability.get("unconverged"),
                     "known after relaxation": stability.get("known_after_relaxation"),
                     "SUN": _interval(pre.get("sun")), "MSUN": _interval(pre.get("msun")),
                     "SUN confirmed": _interval(confirmed.get("sun")),
                     "MSUN confirmed": _interval(confirmed.get("msun")),
                     "confirmed of MSUN": "/".join(map(str, confirmed["msun"]["confirmed_of"]))
                     if confirmed else None})
    return pd.DataFrame(rows), protocol


def training_curves(results: Path, models: list[str]) -> dict[str, pd.DataFrame]:
    """metrics.csv of every model that was trained (not sampled from another's weights)."""
    curves = {}
    for model in models:
        path = results / f"models/{model}/metrics.csv"
        if path.exists():
            curves[model] = pd.read_csv(path)
    return curves


def densities(table: pd.DataFrame) -> np.ndarray:
    """Mass density in g/cm^3 of every row (species are atomic numbers)."""
    masses = np.array([atomic_masses[np.asarray(s, dtype=int)].sum() for s in table.species])
    volumes = np.array([abs(np.linalg.det(np.asarray(lat, dtype=float).reshape(3, 3))) for lat in table.lattice])
    return masses / volumes * AMU_PER_A3_TO_G_PER_CM3


def element_counts(table: pd.DataFrame) -> np.ndarray:
    return np.array([len(set(np.asarray(s).tolist())) for s in table.species])


def space_groups(table: pd.DataFrame, symprec: float = 0.1) -> list[str]:
    """International symbols (spglib through pymatgen); "?" where symmetry search fails."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    symbols = []
    for _, row in table.iterrows():
        try:
            symbols.append(SpacegroupAnalyzer(crystals.to_structure(row), symprec=symprec).get_space_group_symbol())
        except Exception:  # noqa: BLE001 - spglib fails on degenerate cells; the plot says "?"
            symbols.append("?")
    return symbols


def candidate_table(results: Path, sources: list[str], dft: pd.DataFrame | None, top: int) -> pd.DataFrame:
    """The best ``top`` candidates (confirmed MSUN) of all sources by Tc acquisition score, with
    their DFT status where the DFT stage ran (``dft.parquet`` keeps every ranked row
    it considered; candidates beyond it are ``not_selected``)."""
    pooled = [crystals.read_table(results / f"tc/{s}/ranked.parquet") for s in sources
              if (results / f"tc/{s}/ranked.parquet").exists()]
    pooled = [t for t in pooled if len(t)]
    if not pooled:
        return pd.DataFrame(columns=[*crystals.REQUIRED_COLUMNS, *CANDIDATE_COLUMNS])
    table = pd.concat(pooled, ignore_index=True)
    # Ties broken by source and id so that the order never depends on file order.
    table = sort_candidates(table, ["source", "id"])
    table = table.head(top).reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    table["space_group"] = space_groups(table)  # 0.1 A: what a loosely relaxed cell needs
    table["space_group_tight"] = space_groups(table, symprec=0.01)  # pymatgen's default tolerance
    table["dft_status"] = "not_run" if dft is None else "not_selected"
    table["dft_note"] = ""
    for column in ("dft_energy_per_atom", "dft_volume_change"):
        table[column] = np.nan
    if dft is not None and len(dft):
        keyed = dft.set_index(["source", "id"])
        for i, row in table.iterrows():
            key = (row.source, row.id)
            if key in keyed.index:
                match = keyed.loc[key]
                table.loc[i, "dft_status"] = match.dft_status
                table.loc[i, "dft_note"] = match.get("dft_skip_reason") or match.get("dft_error") or ""
                for column in ("dft_energy_per_atom", "dft_volume_change"):
                    table.loc[i, column] = match.get(column, np.nan)
    return table


def rounded(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """The table with its float columns rounded to ``digits``."""
    out = table.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].round(digits)
    return out


def printable(table: pd.DataFrame, columns: list[str], digits: int = 4) -> pd.DataFrame:
    """Selected columns with floats rounded, so that tables compare byte for byte
    between runs (no last-bit noise). Optional columns the table lacks (an interval level
    the predictor was not asked for) are left out."""
    return rounded(table[[c for c in columns if c in table]], digits)
