"""Batched relaxation with any MLIP (:mod:`onnes.mlip`), in-flight batching and early rejection.

The algorithm per structure is chgnet's ``StructOptimizer``: FIRE on positions and cell
through a Frechet cell filter, converged when the largest generalised force is below
``fmax`` (eV/A); the MLIP (CHGNet, SevenNet, ...) gives energies, forces and stresses
and nothing else. What differs from relaxing one structure at a time is the
bookkeeping around it:

- in-flight batching: every MLIP call runs on a batch filled up to ``batch_atoms``
  atoms; a structure that converges, reaches ``max_steps`` or is rejected leaves at once
  and the next queued structure takes its place, so no call runs on a half-empty tail;
- FIRE vectorised over the batch (:mod:`onnes.screen.fire`); the MLIP batches its own
  network call (CHGNet: :mod:`onnes.mlip.chgnet_batch`);
- early rejection (:class:`EarlyRejection`): after ``reject_after`` steps a structure
  whose energy is still far above the convex hull of its chemical system (by a margin
  that tightens later in the relaxation), or whose cell is blowing up, stops as
  ``rejected_early`` with the figure that decided it; at any step, a structure whose
  energy falls far *below* the hull (a potential driven into a nonphysical region,
  e.g. atoms collapsing) stops as ``diverged``.

Finished structures are written every ``chunk_size`` results to ``parts/`` (atomically);
a killed job resumes with the structures no part holds. A structure the MLIP cannot take
(non-finite coordinates, an element it does not know, too many atoms, isolated atoms)
is recorded with a reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from onnes.crystals import read_table, row_arrays, row_problem, write_table
from onnes.io import read_parquet
from onnes.mlip import MLIP, load_mlip
from onnes.screen.fire import BatchFire

log = logging.getLogger(__name__)
RESULT_COLUMNS = ["id", "relax_status", "relax_error", "energy", "energy_per_atom", "mlip", "mlip_version", "fmax",
                  "relax_steps", "relax_converged", "species", "frac_coords", "lattice"]
# Without a hull reference, an energy below this (eV/atom) is nonphysical: the lowest
# DFT energies per atom in the Materials Project are about -13 eV/atom (W, Re, Os).
DIVERGED_FLOOR = -30.0


@dataclass(frozen=True)
class RelaxSettings:
    """How each structure is relaxed: the relaxation keys of the config's ``relax`` block.

    No defaults here: they and the keys' meanings live in the config schema, and
    :meth:`from_config` is the way in (``defaults`` for scripts and tests).
    """

    fmax: float  # eV/A, as StructOptimizer
    max_steps: int
    batch_atoms: int | None  # atoms per CHGNet call; None: sized to free GPU memory
    chunk_size: int  # finished structures per resumable part
    max_atoms: int
    relax_cell: bool
    reject_after: int  # steps before early rejection may act
    reject_above_hull: float | None  # eV/atom above the hull; None: never on energy
    reject_later: tuple[tuple[int, float], ...]  # (from step, tighter margin) pairs
    reject_volume_ratio: float  # cell volume grown or shrunk by more than this factor
    diverged_below_hull: float | None  # eV/atom below the hull: nonphysical, stops as diverged

    @classmethod
    def from_config(cls, relax: dict, **overrides) -> "RelaxSettings":
        """From a validated ``relax`` block (its job-level keys, e.g. shards, are not
        relaxation settings and are left out), with optional overrides."""
        merged = {**relax, **overrides}
        later = merged["reject_later"]
        merged["reject_later"] = tuple(sorted((int(r["after"]), float(r["margin"])) for r in later))
        return cls(**{f.name: merged[f.name] for f in fields(cls)})

    @classmethod
    def defaults(cls, **overrides) -> "RelaxSettings":
        """The schema's defaults, with optional overrides."""
        from onnes.config import validate

        return cls.from_config(validate({})["relax"], **overrides)


class EarlyRejection:
    """Decides, after ``reject_after`` steps, that a structure is not worth relaxing on.

    ``reference_energy(species)`` gives the energy per atom (on the MLIP's footing) of the
    hull at the structure's composition, or None when the hull cannot say (an element
    without a reference). The margin above that hull tightens as the relaxation goes on
    (``reject_above_hull`` from ``reject_after``, then each ``reject_later`` pair): energies
    fall a long way early and settle late. On 300 generated structures relaxed to the end
    (benchmarks/relax.py --labels), the largest energy above the hull that a finally stable
    structure still had was 1.05 eV/atom at step 50 or later, 0.52 at 100 and 0.16 at 200;
    the defaults 3.0, 1.0 and 0.5 keep a wide gap for the rare late collapse.
    """

    def __init__(self, settings: RelaxSettings, reference_energy: Callable[[np.ndarray], float | None] | None):
        self.settings = settings
        self.reference_energy = reference_energy

    def hull_reference(self, species: np.ndarray) -> float:
        if self.reference_energy is None:
            return np.nan
        try:
            value = self.reference_energy(species)
        except Exception as exc:  # a failed hull LP must not stop the relaxation: no rejection on energy
            log.warning("no hull reference for early rejection: %s", exc)
            return np.nan
        return np.nan if value is None else float(value)

    def margin(self, step: int) -> float | None:
        """The energy margin (eV/atom above the hull) in force at ``step``; None: none yet."""
        s = self.settings
        if s.reject_above_hull is None or step < s.reject_after:
            return None
        return min([s.reject_above_hull] + [margin for after, margin in s.reject_later if step >= after])

    def diverged(self, energy_per_atom, hull_reference) -> list[str | None]:
        """Why each structure's energy is nonphysical (far below the hull, or below
        DIVERGED_FLOOR where no hull reference exists), or None. No known compound lies
        more than a few tenths of an eV/atom below the MP hull; a potential pushed out of
        its training domain (atoms collapsing onto each other) can fall without bound."""
        below = self.settings.diverged_below_hull
        out: list[str | None] = []
        for e, ref in zip(energy_per_atom, hull_reference):
            if below is not None and np.isfinite(ref) and e - ref < -below:
                out.append(f"energy {e - ref:.3g} eV/atom below the hull (limit {below})")
            elif e < DIVERGED_FLOOR:
                out.append(f"energy {e:.3g} eV/atom below {DIVERGED_FLOOR}")
            else:
                out.append(None)
        return out

    def reasons(self, steps, energy_per_atom, hull_reference, volume_ratio) -> list[str | None]:
        s = self.settings
        out: list[str | None] = []
        for t, e, ref, ratio in zip(steps, energy_per_atom, hull_reference, volume_ratio):
            reason, margin = None, self.margin(t)
            if t >= s.reject_after:
                if not (1 / s.reject_volume_ratio <= ratio <= s.reject_volume_ratio):
                    reason = f"cell volume x{ratio:.2f} of the generated one after {t} steps"
                elif margin is not None and np.isfinite(ref) and e - ref > margin:
                    reason = f"{e - ref:.3f} eV/atom above the hull after {t} steps (margin {margin})"
            out.append(reason)
        return out


def _reject(row, max_atoms: int, mlip: MLIP) -> str | None:
    problem = row_problem(row)  # the row check every command shares
    if problem:
        return f"{problem[0]}: {problem[1]}"
    species = np.asarray(row["species"])
    unknown = mlip.unknown_elements(species)
    if unknown:
        return f"element Z={unknown[0]} unknown to {mlip.name}"
    if len(species) > max_atoms:
        return f"{len(species)} atoms > relax max_atoms {max_atoms}"
    return None


def _geometry(species, positions, cell) -> dict:
    frac = np.mod(np.linalg.solve(cell.T, positions.T).T, 1.0)
    return {"species": species.tolist(), "frac_coords": frac.reshape(-1).tolist(),
            "lattice": cell.reshape(-1).tolist()}


def _result(row_id, status, error=None, **values) -> dict:
    return {"id": row_id, "relax_status": status, "relax_error": error, "relax_converged": status == "converged",
            **values}


def auto_batch_atoms(mlip: MLIP, sample: list, atoms: int) -> int:
    """Atoms per call that fill about half the free GPU memory, from one probe call
    on ``sample`` (prepared cells of ``atoms`` atoms in all); 1024 on CPU, where larger
    batches stop paying (benchmarks/relax.py)."""
    import torch

    if not str(mlip.device).startswith("cuda") or not sample:
        return 1024
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    mlip.evaluate(sample)
    per_atom = (torch.cuda.max_memory_allocated() - before) / atoms
    free, _ = torch.cuda.mem_get_info()
    return max(256, int(0.5 * free / max(per_atom, 1.0)))


class _Members:
    """Per-structure bookkeeping of the cells in the batch, in the order of ``BatchFire``."""

    def __init__(self):
        self.row = np.zeros(0, dtype=np.int64)
        self.steps = np.zeros(0, dtype=np.int64)
        self.volume0 = np.zeros(0)
        self.hull_reference = np.zeros(0)

    def __len__(self) -> int:
        return len(self.row)

    def add(self, row: int, volume: float, hull_reference: float) -> None:
        self.row = np.append(self.row, row)
        self.steps = np.append(self.steps, 0)
        self.volume0 = np.append(self.volume0, volume)
        self.hull_reference = np.append(self.hull_reference, hull_reference)

    def keep(self, mask: np.ndarray) -> None:
        for name in ("row", "steps", "volume0", "hull_reference"):
            setattr(self, name, getattr(self, name)[mask])


def relax_rows(mlip: MLIP, table: pd.DataFrame, settings: RelaxSettings, reference_energy=None,
               on_finished: Callable[[list[dict]], None] | None = None, trace: list | None = None) -> pd.DataFrame:
    """Relax every row of ``table``; one result row per input row, in table order.

    ``reference_energy(species)``: the hull's energy per atom at that composition, for
    early rejection (None: energy never rejects). ``on_finished`` receives the results
    of each step's finished structures, to write them as they come. ``trace``, a list,
    gets (id, step, energy per atom, hull reference, fmax, volume ratio) per structure
    and step (the data early rejection is tuned on).
    """
    rejection = EarlyRejection(settings, reference_energy)
    described = mlip.describe()
    version = f"{described['package']}, {described['weights']}"
    rows = table.reset_index(drop=True)
    results: list[dict | None] = [None] * len(rows)
    queue: deque[int] = deque()
    arrays = {}
    for i, row in rows.iterrows():
        reason = _reject(row, settings.max_atoms, mlip)
        if reason:
            results[i] = _result(row["id"], "rejected", reason)
        else:
            arrays[i] = row_arrays(row)
            queue.append(i)
    if on_finished and len(queue) < len(rows):
        on_finished([r for r in results if r is not None])
    budget = settings.batch_atoms
    if budget is None and queue:
        first = [queue[k] for k in range(min(16, len(queue)))]
        budget = auto_batch_atoms(mlip, [mlip.prepare(*arrays[i]) for i in first],
                                  sum(len(arrays[i][0]) for i in first))
        log.info("batch sized to %d atoms per %s call", budget, mlip.name)

    fire, members = BatchFire(relax_cell=settings.relax_cell), _Members()

    def leave(keep: np.ndarray) -> None:  # the cells where keep is False leave the batch
        fire.keep(keep)
        members.keep(keep)

    calls, started = 0, time.perf_counter()
    progress = tqdm(total=len(rows), initial=len(rows) - len(queue), desc="relax", unit="struct", mininterval=10)
    while queue or len(members):
        while queue and (not len(members) or fire.n_atoms.sum() + len(arrays[queue[0]][0]) <= budget):
            i = queue.popleft()
            species, frac, lattice = arrays[i]
            fire.add(np.mod(frac, 1.0) @ lattice, lattice)
            members.add(i, abs(np.linalg.det(lattice)), rejection.hull_reference(species))
        finished: list[dict] = []
        cells, positions = fire.cells_and_positions()
        graphs, usable = [], np.ones(len(members), dtype=bool)
        for k, i in enumerate(members.row):
            try:
                frac = np.linalg.solve(cells[k].T, positions[k].T).T
                graphs.append(mlip.prepare(arrays[i][0], frac, cells[k]))
            except Exception as exc:  # isolated atoms, singular cells
                usable[k] = False
                finished.append(_result(rows.id[i], "failed", f"{mlip.name} input: {type(exc).__name__}: {exc}"[:200],
                                        relax_steps=int(members.steps[k])))
                results[i] = finished[-1]
        if not usable.all():  # failures leave before the network call
            leave(usable)
            cells, positions = cells[usable], [p for p, u in zip(positions, usable) if u]
        if len(members):
            energy, forces, stresses = mlip.evaluate(graphs)
            calls += 1
            atom_part, cell_part = fire.generalised_forces(np.concatenate(forces), stresses)
            fmax = fire.fmax(atom_part, cell_part)
            per_atom = energy / fire.n_atoms
            volume_ratio = np.abs(np.linalg.det(cells)) / members.volume0
            reasons = rejection.reasons(members.steps, per_atom, members.hull_reference, volume_ratio)
            diverged = rejection.diverged(per_atom, members.hull_reference)
            if trace is not None:
                trace.extend(zip(rows.id.to_numpy()[members.row], members.steps.tolist(), per_atom.tolist(),
                                 members.hull_reference.tolist(), fmax.tolist(), volume_ratio.tolist()))
            keep = np.ones(len(members), dtype=bool)
            for k, i in enumerate(members.row):
                steps = int(members.steps[k])
                if not (np.isfinite(energy[k]) and np.isfinite(fmax[k])):
                    status, error = "failed", f"non-finite {mlip.name} energy or forces"
                elif diverged[k]:
                    status, error = "diverged", diverged[k]
                elif fmax[k] < settings.fmax:
                    status, error = "converged", None
                elif steps >= settings.max_steps:
                    status, error = "max_steps", None
                elif reasons[k]:
                    status, error = "rejected_early", reasons[k]
                else:
                    continue
                keep[k] = False
                values = {} if status == "failed" else dict(
                    energy=float(energy[k]), energy_per_atom=float(per_atom[k]), mlip=mlip.name, mlip_version=version,
                    fmax=float(fmax[k]),
                    **_geometry(arrays[i][0], positions[k], cells[k]))
                finished.append(_result(rows.id[i], status, error, relax_steps=steps, **values))
                results[i] = finished[-1]
            atom_keep = np.repeat(keep, fire.n_atoms)
            leave(keep)
            if len(members):
                fire.step(atom_part[atom_keep], cell_part[keep])
                members.steps += 1
        progress.update(len(finished))
        if finished and on_finished:
            on_finished(finished)
    progress.close()
    seconds = time.perf_counter() - started
    log.info("relaxed %d structures in %.1f s (%.2f structures/s), %d %s calls", len(rows), seconds,
             len(rows) / max(seconds, 1e-9), calls, mlip.name)
    return pd.DataFrame(results, columns=RESULT_COLUMNS)


def _parts_fingerprint(table: pd.DataFrame, settings: RelaxSettings, mlip: str) -> str:
    return json.dumps({"ids": hashlib.sha256("\n".join(map(str, table.id)).encode()).hexdigest(),
                       "settings": asdict(settings), "mlip": mlip}, sort_keys=True)


def relax_table(mlip: MLIP, table: pd.DataFrame, out_dir: str | Path, settings: RelaxSettings,
                reference_energy=None) -> pd.DataFrame:
    """Relax ``table`` with results written in parts under ``out_dir/parts`` as they
    finish; a rerun after a kill relaxes only what no part holds. Parts from other rows
    or settings are discarded."""
    parts_dir = Path(out_dir) / "parts"
    fingerprint = _parts_fingerprint(table, settings, mlip.name if mlip is not None else "")
    stamp = parts_dir / "fingerprint.json"
    if parts_dir.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        log.info("relaxation settings or rows changed; discarding finished parts in %s", parts_dir)
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    paths = sorted(parts_dir.glob("*.parquet"))
    done = [read_parquet(path) for path in paths]  # finished before a kill
    done_ids = set().union(*(set(part.id) for part in done)) if done else set()
    todo = table[~table.id.isin(done_ids)]
    if done_ids:
        log.info("%d structures already relaxed in %d parts; %d to go", len(done_ids), len(done), len(todo))
    pending: list[dict] = []
    next_part = int(paths[-1].stem) + 1 if paths else 0

    def flush(force: bool = False) -> None:
        nonlocal next_part
        while pending and (force or len(pending) >= settings.chunk_size):
            part = pd.DataFrame(pending[:settings.chunk_size], columns=RESULT_COLUMNS)
            del pending[:settings.chunk_size]
            write_table(part, parts_dir / f"{next_part:05d}.parquet")
            done.append(part)
            next_part += 1

    def on_finished(results: list[dict]) -> None:
        pending.extend(results)
        flush()

    if len(todo):
        relax_rows(mlip, todo, settings, reference_energy, on_finished)
        flush(force=True)
    combined = pd.concat(done, ignore_index=True) if done else pd.DataFrame(columns=RESULT_COLUMNS)
    order = {key: k for k, key in enumerate(table.id)}
    return combined.sort_values("id", key=lambda ids: ids.map(order)).reset_index(drop=True)


def shard_rows(table: pd.DataFrame, shard: int, shards: int) -> pd.DataFrame:
    """Contiguous block ``shard`` of ``shards`` (sizes differ by at most one)."""
    bounds = np.linspace(0, len(table), shards + 1).astype(int)
    return table.iloc[bounds[shard]:bounds[shard + 1]]


def hull_reference_energy(references: str | Path, elements: str | Path, footing: str = "mp2020"
                          ) -> Callable[[np.ndarray], float | None]:
    """Energy per atom of the convex hull at a composition, on an MLIP's ``footing``:
    the elemental reference energies plus the hull's formation energy (MP2020 footing),
    less the composition's MP2020 correction for a raw-footing MLIP (None when an
    element has no reference). Cached per composition."""
    from pymatgen.core import Composition

    from onnes.screen.hull import ConvexHull, element_counts, mp2020_correction_per_atom

    hull = ConvexHull.from_files(references, elements)
    cache: dict[str, float | None] = {}

    def reference(species: np.ndarray) -> float | None:
        composition = Composition(element_counts(species))
        key = composition.reduced_formula
        if key not in cache:
            if hull.missing(composition):
                cache[key] = None
            else:
                e_form, _ = hull.hull_energy(composition)
                cache[key] = e_form + hull.elemental_energy_per_atom(composition)
                if footing == "raw":
                    cache[key] -= mp2020_correction_per_atom(composition)
        return cache[key]

    return reference


def relax_file(table_path: str | Path, out_path: str | Path, settings: RelaxSettings, calculator: str = "chgnet",
               device: str = "cpu", shard: int = 0, shards: int = 1, select=None,
               hull_files: tuple[Path, Path] | None = None) -> pd.DataFrame:
    """Relax shard ``shard`` of the rows of a crystal table that ``select`` keeps (a
    function of the table, e.g. a funnel step) with the MLIP named ``calculator``; work
    files live beside ``out_path``. ``hull_files`` (hull references, elemental entries)
    enable rejection on energy and the divergence check against the hull."""
    table = read_table(table_path)
    if select is not None:
        table = select(table)
    table = shard_rows(table, shard, shards)
    mlip = load_mlip(calculator, device) if len(table) else None
    reference = hull_reference_energy(*hull_files, footing=mlip.footing) if hull_files and len(table) else None
    result = relax_table(mlip, table, Path(out_path).parent / (Path(out_path).stem + "_work"), settings, reference)
    write_table(result, out_path)
    return result


def relax_stage(table_path: str | Path, out_path: str | Path, relax: dict, shard: int = 0,
                hull_files: tuple[str | Path, str | Path] | None = None) -> pd.DataFrame:
    """One pre-relaxation job of the workflow: the validated ``relax`` config block decides
    the MLIP, the rows (``select``, ``max_structures``), the shard split, the device and
    the threads."""
    import torch

    from onnes.screen.funnel import select_for_relaxation

    torch.set_num_threads(relax["threads"])
    step, cap = relax["select"], relax["max_structures"]

    def select(table):  # a screened table relaxes the rows past the configured step
        return select_for_relaxation(table, step, cap) if step in table else table

    return relax_file(table_path, out_path, RelaxSettings.from_config(relax), relax["calculator"],
                      device=relax["device"], shard=shard, shards=relax["shards"], select=select,
                      hull_files=hull_files)


def confirm_settings(confirm: dict) -> RelaxSettings:
    """Relaxation settings of the confirming stage: its own fmax, steps and batch; no
    early rejection on energy (every structure it takes was stable a moment ago), the
    volume and divergence checks kept."""
    return RelaxSettings.from_config(confirm, reject_after=0, reject_above_hull=None, reject_later=[])


def confirm_stage(table_path: str | Path, out_path: str | Path, confirm: dict,
                  hull_files: tuple[str | Path, str | Path] | None = None) -> pd.DataFrame:
    """The confirming relaxation of one source: the rows of a stability table that the
    pre-relaxation found metastable, unique and novel against everything known (``msun``),
    the first ``confirm.max_structures`` of them, relaxed again from their pre-relaxed
    geometry with ``confirm.calculator`` to ``confirm.fmax``."""
    import torch

    from onnes.screen.funnel import select_for_relaxation

    torch.set_num_threads(confirm["threads"])
    return relax_file(table_path, out_path, confirm_settings(confirm), confirm["calculator"], device=confirm["device"],
                      select=lambda table: select_for_relaxation(table, "msun", confirm["max_structures"]),
                      hull_files=hull_files)
