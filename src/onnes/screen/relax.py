"""Batched CHGNet pre-relaxation (Deng et al., Nat. Mach. Intell. 5, 1031, 2023).

Same algorithm as chgnet's StructOptimizer (ASE FIRE on positions and cell through
FrechetCellFilter, fmax in eV/A), but the structures advance in lockstep: at every step
one batched CHGNet call predicts energies, forces and stresses for all structures still
relaxing, then each structure's FIRE takes its step. The network runs on batches
instead of single cells, which is where the time goes on CPUs and, far more, on GPUs.

Work is split in chunks written atomically to ``parts/``; a killed job resumes and
skips finished chunks. A structure CHGNet cannot take (non-finite coordinates, an
element it does not know, too many atoms, isolated atoms) is recorded with a reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from pymatgen.io.ase import AseAtomsAdaptor

from onnes.crystals import read_table, row_arrays, structure_columns, write_table

log = logging.getLogger(__name__)
CHGNET_MAX_Z = 94
RESULT_COLUMNS = ["id", "relax_status", "relax_error", "energy_chgnet", "energy_chgnet_per_atom", "fmax",
                  "relax_steps", "relax_converged", "species", "frac_coords", "lattice"]


@dataclass(frozen=True)
class RelaxSettings:
    fmax: float = 0.1  # eV/A, as StructOptimizer
    max_steps: int = 500
    batch_size: int = 64  # structures per CHGNet forward pass
    chunk_size: int = 256  # structures per resumable part
    max_atoms: int = 200
    relax_cell: bool = True


def load_chgnet(device: str = "cpu"):
    from chgnet.model import CHGNet

    return CHGNet.load(verbose=False, use_device=device)


def _reject(row) -> str | None:
    try:
        species, frac, lattice = row_arrays(row)
    except ValueError as exc:
        return f"malformed: {exc}"
    if not (np.isfinite(frac).all() and np.isfinite(lattice).all()):
        return "non-finite coordinates or lattice"
    if species.min() < 1 or species.max() > CHGNET_MAX_Z:
        return f"element Z={int(species.max())} outside CHGNet's range 1..{CHGNET_MAX_Z}"
    return None


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


def relax_batch(model, table: pd.DataFrame, settings: RelaxSettings) -> pd.DataFrame:
    """Relax every row of ``table`` together; one result row per input row."""
    out = {i: {"id": row["id"], "relax_status": None} for i, row in table.iterrows()}
    atoms, optimizers, targets, steps = {}, {}, {}, {}
    for i, row in table.iterrows():
        reason = _reject(row)
        if reason is None and len(row["species"]) > settings.max_atoms:
            reason = f"{len(row['species'])} atoms > relax max_atoms {settings.max_atoms}"
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
            out[i].update(energy_chgnet=prediction["energy"], fmax=fmax, relax_steps=steps[i])
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
            result["energy_chgnet_per_atom"] = result["energy_chgnet"] / len(structure)
        result["relax_converged"] = result["relax_status"] == "converged"
        rows.append(result)
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def _reuse_parts(parts_dir: Path, table: pd.DataFrame, settings: RelaxSettings) -> None:
    """Keep finished chunks only if they came from the same rows and settings."""
    fingerprint = json.dumps({"ids": hashlib.sha256("\n".join(map(str, table.id)).encode()).hexdigest(),
                              "settings": asdict(settings)}, sort_keys=True)
    stamp = parts_dir / "fingerprint.json"
    if parts_dir.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        log.info("relaxation settings or rows changed; discarding finished chunks in %s", parts_dir)
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


def relax_table(model, table: pd.DataFrame, out_dir: str | Path, settings: RelaxSettings) -> pd.DataFrame:
    """Relax ``table`` in resumable chunks under ``out_dir/parts``; return all results."""
    parts_dir = Path(out_dir) / "parts"
    _reuse_parts(parts_dir, table, settings)
    parts = []
    for start in range(0, len(table), settings.chunk_size):
        path = parts_dir / f"{start // settings.chunk_size:05d}.parquet"
        if path.exists():
            log.info("chunk %s already relaxed; skipping", path.name)
        else:
            began = time.perf_counter()
            chunk = table.iloc[start:start + settings.chunk_size]
            result = relax_batch(model, chunk, settings)
            write_table(result, path)
            seconds = time.perf_counter() - began
            log.info("relaxed %d structures in %.1f s (%.2f structures/s)", len(chunk), seconds,
                     len(chunk) / max(seconds, 1e-9))
        parts.append(pd.read_parquet(path))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RESULT_COLUMNS)


def shard_rows(table: pd.DataFrame, shard: int, shards: int) -> pd.DataFrame:
    """Contiguous block ``shard`` of ``shards`` (sizes differ by at most one)."""
    bounds = np.linspace(0, len(table), shards + 1).astype(int)
    return table.iloc[bounds[shard]:bounds[shard + 1]]


def relax_file(table_path: str | Path, out_path: str | Path, settings: RelaxSettings, device: str = "cpu",
               shard: int = 0, shards: int = 1, select=None) -> pd.DataFrame:
    """Relax shard ``shard`` of the rows of a crystal table that ``select`` keeps (a
    function of the table, e.g. a funnel step); work files live beside ``out_path``."""
    table = read_table(table_path)
    if select is not None:
        table = select(table)
    table = shard_rows(table, shard, shards)
    model = load_chgnet(device) if len(table) else None
    result = relax_table(model, table, Path(out_path).parent / (Path(out_path).stem + "_work"), settings)
    write_table(result, out_path)
    return result

