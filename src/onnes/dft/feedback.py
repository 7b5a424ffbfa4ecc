"""What a round's DFT teaches the next round: its computed phases join the hull and the
known crystals that later rounds are judged against.

Every phase DFT computed successfully becomes *known*: a later candidate that matches it
is not novel, so a crystal DFT called unstable is never proposed again, and one it
verified is no longer a discovery. A phase joins the *hull references* only with an
energy on the references' footing (MP2020-corrected GGA/GGA+U formation energies):

- VASP with MP's settings: its MP2020-corrected formation energy (``e_form_per_atom_dft``,
  from :func:`onnes.dft.results.vasp_hull_columns`), as the MP hull itself is built;
- any other code (CP2K here: GTH pseudopotentials, another functional's implementation)
  only as an energy relative to its own decomposition products computed at the same
  settings (``e_above_hull_dft_local``), placed at that height above the references'
  hull at its composition. Without that column its total energy has no footing on the MP
  hull and it stays known only, which the summary states per phase.

A phase below the hull moves it: later candidates of that chemistry are judged against
the new phase (tested by planting one).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pymatgen.core import Composition

from onnes.crystals import REQUIRED_COLUMNS
from onnes.screen.hull import ConvexHull, element_counts

# Columns of dft.parquet that carry an energy the hull can take, in order of preference.
MP_FOOTING = "e_form_per_atom_dft"
LOCAL_HULL = "e_above_hull_dft_local"


def computed_phases(dft: pd.DataFrame, round_index: int) -> pd.DataFrame:
    """The successfully computed phases of one round's ``dft.parquet`` as a crystal table
    in their DFT geometry (ids prefixed ``dft-r{k}:``, split ``round-{k}``)."""
    done = dft[dft["dft_status"] == "success"] if len(dft) else dft
    rows = []
    for _, row in done.iterrows():
        geometry = "dft_species" in row and isinstance(row["dft_species"], (list, np.ndarray))
        rows.append({
            "id": f"dft-r{round_index}:{row['source']}:{row['id']}",
            "species": list(row["dft_species"] if geometry else row["species"]),
            "frac_coords": list(row["dft_frac_coords"] if geometry else row["frac_coords"]),
            "lattice": list(row["dft_lattice"] if geometry else row["lattice"]),
            "source": "dft",
            "split": f"round-{round_index}",
            "dft_code": row.get("dft_code"),
            MP_FOOTING: float(row[MP_FOOTING]) if MP_FOOTING in row and pd.notna(row[MP_FOOTING]) else np.nan,
            LOCAL_HULL: float(row[LOCAL_HULL]) if LOCAL_HULL in row and pd.notna(row[LOCAL_HULL]) else np.nan,
            "dft_local_status": row.get("dft_local_status") if pd.notna(row.get("dft_local_status")) else None,
        })
    columns = [*REQUIRED_COLUMNS, "split", "dft_code", MP_FOOTING, LOCAL_HULL, "dft_local_status"]
    return pd.DataFrame(rows, columns=columns)


def hull_entry(phase, hull: ConvexHull) -> tuple[float | None, str]:
    """(formation energy per atom on the references' footing, how it was placed), or
    (None, why not) for a phase that stays known only."""
    composition = Composition(element_counts(phase["species"]))
    missing = hull.missing(composition)
    if missing:
        return None, f"no elemental reference for {', '.join(missing)}"
    if np.isfinite(phase[MP_FOOTING]):
        return float(phase[MP_FOOTING]), "MP2020-corrected DFT formation energy"
    if np.isfinite(phase[LOCAL_HULL]):
        e_hull, _ = hull.hull_energy(composition)
        return e_hull + float(phase[LOCAL_HULL]), "hull energy + DFT energy above its own decomposition products"
    local = phase["dft_local_status"] or "dft.local_hull off"
    return None, f"{phase['dft_code']} total energy: not on the MP2020 footing, no local hull ({local}); known only"


def feed_back(references: pd.DataFrame, known: pd.DataFrame, dft_tables: dict[int, pd.DataFrame],
              potentials: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """A later round's hull references and known crystals: the campaign's, plus the phases
    of the given rounds' DFT tables (round -> dft.parquet). Phases are placed against the
    hull as it stands before them (the campaign's references), so the order of rounds
    does not change an entry. Returns (references, known, summary)."""
    hull = ConvexHull(references, potentials)
    entries, known_rows, phases_summary = [], [], []
    for k in sorted(dft_tables):
        phases = computed_phases(dft_tables[k], k)
        for _, phase in phases.iterrows():
            e_form, how = hull_entry(phase, hull)
            composition = Composition(element_counts(phase["species"]))
            record = {"round": k, "id": phase["id"], "formula": composition.reduced_formula,
                      "code": phase["dft_code"], "known": True, "on_hull_references": e_form is not None,
                      "placement": how}
            if e_form is not None:
                e_above, products = hull.e_above_hull(composition, e_form)
                record.update(e_form_per_atom=e_form, e_above_previous_hull=e_above, decomposition=products,
                              moves_hull=bool(e_above < 0))
                entries.append({"id": phase["id"], "source": f"dft-round-{k}", "e_form_per_atom": e_form,
                                "composition": json.dumps(element_counts(phase["species"]), sort_keys=True)})
            phases_summary.append(record)
        known_rows.append(phases[[*REQUIRED_COLUMNS, "split"]])
    new_references = pd.concat([references, pd.DataFrame(entries, columns=references.columns)],
                               ignore_index=True) if entries else references.copy()
    new_known = pd.concat([known, *known_rows], ignore_index=True) if known_rows else known.copy()
    summary = {
        "rounds": sorted(dft_tables),
        "phases": phases_summary,
        "known_added": sum(len(t) for t in known_rows),
        "hull_entries_added": len(entries),
        "moves_hull": sum(bool(p.get("moves_hull")) for p in phases_summary),
        "references": len(new_references),
        "known": len(new_known),
    }
    return new_references, new_known, summary
