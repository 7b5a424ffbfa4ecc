"""The lockstep relaxer Onnes shipped before the in-flight one, kept as benchmark (b).

ASE FIRE + FrechetCellFilter per structure (chgnet's StructOptimizer algorithm), one
``CHGNet.predict_graph`` call per step for every structure still relaxing; a batch runs
until its last structure stops.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from pymatgen.io.ase import AseAtomsAdaptor

from onnes.crystals import row_arrays, structure_columns
from onnes.screen.relax import RESULT_COLUMNS, _reject


@dataclass(frozen=True)
class LockstepSettings:
    fmax: float = 0.1
    max_steps: int = 500
    batch_size: int = 64
    max_atoms: int = 200
    relax_cell: bool = True


def _atoms(row) -> Atoms:
    species, frac, lattice = row_arrays(row)
    return Atoms(numbers=species, scaled_positions=np.mod(frac, 1.0), cell=lattice, pbc=True)


def _predict(model, atoms_list: list[Atoms], batch_size: int) -> list[dict | str]:
    """CHGNet energy (eV), forces (eV/A), stress (eV/A^3) per structure, or an error."""
    graphs, positions = [], []
    results: list[dict | str] = [""] * len(atoms_list)
    for k, atoms in enumerate(atoms_list):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = model.graph_converter(AseAtomsAdaptor.get_structure(atoms))  # isolated atoms raise
            graphs.append(graph)
            positions.append(k)
        except Exception as exc:  # isolated atoms, converter failures
            results[k] = f"CHGNet graph: {type(exc).__name__}: {exc}"[:200]
    if graphs:
        predictions = model.predict_graph(graphs, task="efs", batch_size=batch_size)
        if isinstance(predictions, dict):
            predictions = [predictions]
        for k, prediction in zip(positions, predictions):
            n = len(atoms_list[k])
            results[k] = {
                "energy": float(prediction["e"]) * n,  # CHGNet predicts eV/atom
                "forces": np.asarray(prediction["f"], dtype=float),
                "stress": np.asarray(prediction["s"], dtype=float) * units.GPa,  # GPa -> eV/A^3
            }
    return results


def relax_batch(model, table: pd.DataFrame, settings: LockstepSettings) -> pd.DataFrame:
    """Relax every row of ``table`` together; one result row per input row."""
    out = {i: {"id": row["id"], "relax_status": None} for i, row in table.iterrows()}
    atoms, optimizers, targets, steps = {}, {}, {}, {}
    for i, row in table.iterrows():
        reason = _reject(row, settings.max_atoms)
        if reason:
            out[i].update(relax_status="rejected", relax_error=reason)
            continue
        atoms[i] = _atoms(row)
        targets[i] = FrechetCellFilter(atoms[i]) if settings.relax_cell else atoms[i]
        optimizers[i] = FIRE(targets[i], logfile=None)
        steps[i] = 0
    active = list(atoms)
    while active:
        predictions = _predict(model, [atoms[i] for i in active], settings.batch_size)
        still = []
        for i, prediction in zip(active, predictions):
            if isinstance(prediction, str):
                out[i].update(relax_status="failed", relax_error=prediction)
                continue
            atoms[i].calc = SinglePointCalculator(atoms[i], **prediction)
            fmax = float(np.sqrt((targets[i].get_forces() ** 2).sum(axis=1).max()))
            out[i].update(energy=prediction["energy"], mlip="chgnet", fmax=fmax, relax_steps=steps[i])
            if fmax < settings.fmax:
                out[i]["relax_status"] = "converged"
            elif steps[i] >= settings.max_steps:
                out[i]["relax_status"] = "max_steps"
            else:
                optimizers[i].step()
                steps[i] += 1
                still.append(i)
        active = still
    rows = []
    for i, result in out.items():
        if i in atoms and result["relax_status"] in ("converged", "max_steps"):
            structure = AseAtomsAdaptor.get_structure(atoms[i])
            result.update(structure_columns(structure))
            result["energy_per_atom"] = result["energy"] / len(structure)
        result["relax_converged"] = result["relax_status"] == "converged"
        rows.append(result)
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)
