"""Which ranked candidates go to DFT.

All sources' ranked tables are pooled and ordered by the Tc acquisition score; the best
``top_k`` that the configured code can run get a slot (one Snakemake job each). A
candidate passed over on the way (too many sites, elements the basis set lacks) stays in
the table with its reason, so nothing ranked above a verified candidate is lost silently.
"""

from __future__ import annotations

import pandas as pd
from pymatgen.core import Element

from onnes.crystals import REQUIRED_COLUMNS, row_problem
from onnes.dft.settings import DftSettings
from onnes.tc.ranking import sort_candidates

SKIPPED = -1


def skip_reason(row, settings: DftSettings, cp2k_data_dir=None) -> str | None:
    problem = row_problem(row)  # the shared row check: no DFT slot for a broken row
    if problem:
        return f"{problem[0]}: {problem[1]}"
    if len(row["species"]) > settings.max_sites:
        return f"{len(row['species'])} sites > dft.max_sites {settings.max_sites}"
    symbols = sorted({Element.from_Z(int(z)).symbol for z in row["species"]})
    excluded = [s for s in symbols if s in settings.exclude_elements]
    if excluded:
        return f"{', '.join(excluded)} in dft.exclude_elements"
    if settings.code == "cp2k":
        from onnes.dft.cp2k import UnsupportedElements, basis_and_potential

        try:
            basis_and_potential(symbols, cp2k_data_dir, settings.cp2k["basis"])
        except UnsupportedElements as exc:
            return str(exc)
    return None


def select_candidates(ranked: dict[str, pd.DataFrame], settings: DftSettings,
                      cp2k_data_dir=None) -> pd.DataFrame:
    """Pooled candidates in acquisition order with ``dft_slot`` (0..top_k-1, or -1 with
    ``dft_skip_reason``), cut after the last selected one."""
    frames = [table.assign(source=table.get("source", name)) for name, table in ranked.items() if len(table)]
    if not frames:  # nothing ranked: an empty crystal table, every slot stays empty
        return pd.DataFrame({c: pd.Series(dtype=object) for c in REQUIRED_COLUMNS}).assign(
            dft_slot=pd.Series(dtype="int64"), dft_skip_reason=pd.Series(dtype=object))
    pool = pd.concat(frames, ignore_index=True)
    pool = sort_candidates(pool, ["id"])
    slots, reasons, chosen = [], [], 0
    for _, row in pool.iterrows():
        if chosen == settings.top_k:
            break
        reason = skip_reason(row, settings, cp2k_data_dir)
        reasons.append(reason)
        slots.append(SKIPPED if reason else chosen)
        chosen += reason is None
    picked = pool.iloc[:len(slots)].copy()
    picked["dft_slot"] = slots
    picked["dft_skip_reason"] = reasons
    return picked.reset_index(drop=True)
