"""Superconducting Tc labels: the 3DSC join and the SuperCon composition table.

Conventions (SuperCon, 3DSC): Tc = 0 K is a *measured* non-superconductor; a structure
whose formula matches no Tc record has an *unknown* Tc (NaN), never 0.

Several records of one composition (``composition_tc``): SuperCon lists some compositions
both with a Tc and with 0 K (NbN: 0, 13.5 and 0 K), from samples that were off
stoichiometry, impure or not cooled far enough. A report of superconductivity is positive
evidence and a 0 K record is not evidence against it, so a composition with any record
above 0 K is superconducting, with the median of its positive records as its Tc; only a
composition whose every record is 0 K is a non-superconductor.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition
from pymatgen.core.periodic_table import Element

from onnes.catalogue import DATASET_FILES

_KEY_DECIMALS = 4


def parse_composition(formula: str) -> Composition | None:
    """A pymatgen Composition of real elements, or None if the formula is unparsable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            composition = Composition(formula)
    except Exception:
        return None
    if not composition or any(not isinstance(el, Element) for el in composition):
        return None
    return composition


def composition_key(formula: str | Composition) -> str | None:
    """Canonical key of a composition: element fractions rounded, sorted by symbol.

    'Ba0.4K0.6Fe2As2' and 'As2Ba0.4Fe2K0.6' give the same key; None if unparsable.
    """
    composition = formula if isinstance(formula, Composition) else parse_composition(formula)
    if composition is None:
        return None
    fractions = composition.fractional_composition
    parts = sorted((el.symbol, round(float(x), _KEY_DECIMALS)) for el, x in fractions.items())
    return " ".join(f"{symbol}:{amount:.{_KEY_DECIMALS}f}" for symbol, amount in parts)


def read_3dsc_tc_table(path: str | Path) -> pd.DataFrame:
    """3DSC cleaned SuperCon table: formula_sc -> Tc (first line of the file is a comment)."""
    table = pd.read_csv(path, skiprows=1)
    missing = {"formula_sc", "tc"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: expected columns formula_sc, tc; missing {sorted(missing)}")
    return table


def read_supercon(path: str | Path) -> pd.DataFrame:
    table = pd.read_csv(path)
    missing = {"name", "Tc"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: expected columns name, Tc; missing {sorted(missing)}")
    return table


def composition_tc(keys: pd.Series, tc: pd.Series) -> pd.DataFrame:
    """One Tc per key (the module's rule: median of the records above 0 K where there is
    one, else 0 K), with the record count, the range of all records and the count of 0 K
    records a positive Tc overrules (``tc_zero_overruled``)."""
    frame = pd.DataFrame({"key": keys, "tc": pd.to_numeric(tc, errors="coerce")})
    frame = frame[frame.key.notna() & np.isfinite(frame.tc) & (frame.tc >= 0)]
    grouped = frame.groupby("key").tc
    out = grouped.agg(tc_n_records="count", tc_min="min", tc_max="max")
    positive = frame[frame.tc > 0].groupby("key").tc.median()
    out["tc_K"] = positive.reindex(out.index).fillna(0.0)
    zeros = frame[frame.tc == 0].groupby("key").tc.size().reindex(out.index).fillna(0).astype(int)
    out["tc_zero_overruled"] = np.where(out.tc_K > 0, zeros, 0)
    return out


def attach_tc(structures: pd.DataFrame, tc_table: pd.DataFrame, supercon: pd.DataFrame) -> pd.DataFrame:
    """Add ``tc_K``, ``tc_source``, ``tc_n_records``, ``tc_spread_K`` to 3DSC rows.

    1. exact join of the CIF file-name formula (``formula_sc``) to the 3DSC Tc table;
    2. rows left unmatched are joined by composition (``composition_key``) to SuperCon,
       the table 3DSC itself was built from (3DSC's Tc table lists only formulas it
       also matched to ICSD, so some of its MP structures are absent from it).
    Several records of one formula are summarised by ``composition_tc``'s rule; the
    spread (max - min) is kept so ambiguous labels can be filtered.
    """
    out = structures.copy()
    primary = composition_tc(tc_table.formula_sc, tc_table.tc)
    fallback = composition_tc(supercon.name.map(composition_key), supercon.Tc)

    hit = primary.reindex(out.formula_sc)
    keys = out.formula_sc.map(composition_key)
    second = fallback.reindex(keys)
    use_second = hit.tc_K.isna().to_numpy() & second.tc_K.notna().to_numpy()

    def pick(column: str) -> np.ndarray:
        return np.where(use_second, second[column].to_numpy(), hit[column].to_numpy())

    out["tc_K"] = pick("tc_K").astype(float)
    out["tc_n_records"] = np.nan_to_num(pick("tc_n_records").astype(float)).astype(int)
    out["tc_spread_K"] = (pick("tc_max") - pick("tc_min")).astype(float)
    source = np.where(use_second, "supercon", np.where(hit.tc_K.notna(), "3dsc_icsd", None))
    out["tc_source"] = pd.Series(source, index=out.index, dtype=object)
    return out


def tc_summary(tc: pd.Series) -> dict:
    values = pd.to_numeric(tc, errors="coerce")
    known = values.dropna()
    return {
        "labelled": int(known.size),
        "superconducting": int((known > 0).sum()),
        "non_superconducting": int((known == 0).sum()),
        "unknown": int(values.isna().sum()),
        "max_K": float(known.max()) if known.size else math.nan,
    }


def curate_supercon(path: str | Path, allowed: frozenset[str], max_records: int | None = None):
    """SuperCon compositions -> (kept, dropped) tables. Rows keep their own Tc."""
    table = read_supercon(path)
    if max_records:
        table = table.head(max_records)
    kept, dropped = [], []
    for index, name, tc in zip(table.index, table.name.astype(str), table.Tc):
        base = {"id": f"supercon-{index}", "source": "supercon", "name": name}
        composition = parse_composition(name)
        tc_value = pd.to_numeric(pd.Series([tc]), errors="coerce").iloc[0]
        if composition is None:
            reason = "unknown_element" if _has_unknown_symbol(name) else "parse_error"
            dropped.append({**base, "drop_reason": reason, "drop_detail": f"composition '{name}'"})
            continue
        elements = {el.symbol for el in composition.elements}
        if not elements <= allowed:
            detail = f"elements {sorted(elements - allowed)} not allowed"
            dropped.append({**base, "drop_reason": "disallowed_element", "drop_detail": detail})
            continue
        if not (np.isfinite(tc_value) and tc_value >= 0):
            dropped.append({**base, "drop_reason": "invalid_tc", "drop_detail": f"Tc '{tc}'"})
            continue
        kept.append(
            {
                **base,
                "composition_key": composition_key(composition),
                "formula": composition.reduced_formula,
                "num_elements": len(composition.elements),
                "tc_K": float(tc_value),
            }
        )
    columns = ["id", "source", "name", "composition_key", "formula", "num_elements", "tc_K"]
    return pd.DataFrame(kept, columns=columns), pd.DataFrame(
        dropped, columns=["id", "source", "name", "drop_reason", "drop_detail"]
    )


def _has_unknown_symbol(formula: str) -> bool:
    return any(not Element.is_valid_symbol(s) for s in re.findall(r"[A-Z][a-z]?", formula))


def supercon_path(cache: str | Path) -> Path:
    return Path(cache) / DATASET_FILES["supercon"][0]
