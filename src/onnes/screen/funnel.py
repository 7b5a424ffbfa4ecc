"""The screening funnel: validity -> uniqueness -> novelty (more steps join it:
pre-relaxation, hull stability, Tc).

Definitions follow the literature so rates compare with published tables:
- valid: structurally (distances >= 0.5 A, volume >= 0.1 A^3) and compositionally (SMACT)
  valid (CDVAE, Xie et al. 2022);
- unique: not StructureMatcher-equivalent to an earlier valid generated structure;
- novel: unique and matching no training structure (MatterGen, Zeni et al. 2025),
  StructureMatcher ltol 0.2, stol 0.3, angle_tol 5 by default.
Every row is kept; ``drop_reason`` names the first step it failed, and ``funnel``
counts each step in order, with rates over all generated structures.
"""

from __future__ import annotations

import pandas as pd

from onnes.matching import Tolerances, find_duplicates, find_known, reduced_formulas
from onnes.screen.validity import compositional_validity, structural_validity

STEPS = ("generated", "valid", "unique", "novel")


def screen(samples: pd.DataFrame, reference: pd.DataFrame, settings: dict, workers: int = 1
           ) -> tuple[pd.DataFrame, dict]:
    table = samples.copy()
    table["formula"] = reduced_formulas(table)
    table = table.join(structural_validity(table, settings["min_distance"], settings["min_volume"]))
    table["valid_comp"] = compositional_validity(table)
    table["valid"] = table.valid_struct & table.valid_comp

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
    table["drop_reason"] = reasons
    table["duplicate_of"] = table.id.map(duplicates)
    return table, funnel_counts(table)


def funnel_counts(table: pd.DataFrame) -> dict:
    total = len(table)
    counts = {
        "generated": total,
        "valid": int(table.valid.sum()),
        "unique": int(table.unique.sum()),
        "novel": int(table.novel.sum()),
    }
    return {
        "steps": counts,
        "rates": {k: (v / total if total else 0.0) for k, v in counts.items()},
        "valid_struct": int(table.valid_struct.sum()),
        "valid_comp": int(table.valid_comp.sum()),
        "drop_reasons": table.drop_reason.value_counts().to_dict(),
    }
