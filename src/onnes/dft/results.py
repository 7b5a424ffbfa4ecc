"""Rows of ``dft.parquet`` from stored task documents.

For CP2K (and any code whose pseudopotentials differ from MP's) a row carries the DFT
energy, the DFT geometry and how far it moved from the CHGNet structure; these energies
are never put on the MP hull. For VASP with MP settings the energy gets the MP2020
corrections and is placed on the campaign's MP hull (``e_above_hull_dft``).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

# Codes whose total energies can share MP's hull (same PAW potentials and settings).
MP_COMPATIBLE_CODES = {"vasp"}


def structure_change(before: Structure, after: Structure) -> dict:
    """Relative volume change and RMS site displacement (Angstrom; sites matched under
    periodic boundaries, no rescaling) from the CHGNet to the DFT geometry."""
    change = {"dft_volume_change": after.volume / before.volume - 1.0,
              "dft_rms_displacement": np.nan}
    matcher = StructureMatcher(primitive_cell=False, scale=False, attempt_supercell=False)
    rms = matcher.get_rms_dist(before, after)
    if rms is not None:
        # get_rms_dist normalises by (V / n)^(1/3); undo that to report Angstrom.
        change["dft_rms_displacement"] = rms[0] * (after.volume / len(after)) ** (1 / 3)
    return change


def task_fields(task: dict) -> tuple[dict, Structure]:
    """Energy, geometry and provenance from a stored atomate2 task document (CP2K
    ``TaskDocument`` or VASP ``TaskDoc``, as the JobStore returns it), as plain columns."""
    output = task["output"]
    structure = output["structure"]
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    energy = float(output["energy"])
    fields = {
        "dft_energy": energy,
        "dft_energy_per_atom": energy / len(structure),
        "dft_species": [site.specie.Z for site in structure],
        "dft_frac_coords": structure.frac_coords.ravel().tolist(),
        "dft_lattice": structure.lattice.matrix.ravel().tolist(),
        "dft_dir": str(task.get("dir_name", "")),
        "dft_task_state": str(task.get("state", "")),
    }
    entry = task.get("entry")
    if entry:
        parameters = entry.get("parameters", {}) if isinstance(entry, dict) else entry.parameters
        fields["dft_run_type"] = str(parameters.get("run_type", ""))
        # JSON text: parquet cannot store an empty mapping (the GGA case).
        fields["dft_hubbards"] = json.dumps(dict(parameters.get("hubbards") or {}), sort_keys=True)
    return fields, structure


def vasp_hull_columns(table: pd.DataFrame, hull) -> pd.DataFrame:
    """MP2020-corrected DFT energies of successful VASP rows placed on the MP hull."""
    from onnes.screen.hull import evaluate_stability, mp2020_corrected_energy

    corrected, species = [], []
    for _, row in table.iterrows():
        ran = row.get("dft_code") in MP_COMPATIBLE_CODES and row.get("dft_status") == "success"
        species.append(row["dft_species"] if ran else row["species"])
        if not ran:
            corrected.append(np.nan)
            continue
        structure = Structure(np.reshape(row["dft_lattice"], (3, 3)), list(row["dft_species"]),
                              np.reshape(row["dft_frac_coords"], (-1, 3)))
        hubbards = json.loads(row.get("dft_hubbards") or "{}")
        parameters = {"run_type": row.get("dft_run_type") or "GGA", "hubbards": hubbards,
                      "is_hubbard": bool(hubbards)}
        try:
            corrected.append(mp2020_corrected_energy(structure, float(row["dft_energy"]), parameters))
        except ValueError:
            corrected.append(np.nan)
    frame = pd.DataFrame({"energy_dft_mp2020": corrected, "species": species}, index=table.index)
    stability = evaluate_stability(frame, hull, energy_column="energy_dft_mp2020")
    stability.columns = [f"{c}_dft" for c in stability.columns]
    return pd.concat([frame[["energy_dft_mp2020"]], stability], axis=1)


def gather(candidates: pd.DataFrame, records: list[dict], hull=None) -> pd.DataFrame:
    """The candidates table joined with one DFT record per slot; passed-over candidates
    keep status ``skipped`` and their reason. With a hull, successful VASP rows get
    MP2020-corrected formation energies and ``e_above_hull_dft``."""
    runs = pd.DataFrame([r for r in records if r.get("dft_status") != "no_candidate"])
    table = candidates.copy()
    if len(runs):
        runs = runs.drop(columns=[c for c in runs.columns if c in table.columns and c != "id"])
        table = table.merge(runs, on="id", how="left")
    for column in ("dft_status", "dft_error", "dft_code"):
        if column not in table:
            table[column] = None
    skipped = table["dft_slot"] < 0
    table.loc[skipped, "dft_status"] = "skipped"
    table.loc[skipped, "dft_error"] = table.loc[skipped, "dft_skip_reason"]
    table["dft_status"] = table["dft_status"].fillna("missing")
    if hull is not None and (table["dft_code"] == "vasp").any():
        table = pd.concat([table, vasp_hull_columns(table, hull)], axis=1)
    return table
