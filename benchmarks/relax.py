"""Benchmark: CHGNet relaxation of generated and perturbed MP-20 structures, three ways,
in one run: (a) chgnet's StructOptimizer one structure at a time, (b) the lockstep
relaxer Onnes shipped before (benchmarks/relax_lockstep.py), (c) the in-flight relaxer
with early rejection (onnes.screen.relax). Prints structures/s, the ratios, energy
agreement where all converge, and the stable sets (e_above_hull <= 0.1 eV/atom).

    python benchmarks/relax.py --demo results/demo --elements <mp_elemental_reference_entries.json.gz> \\
        [--novel 256 --perturbed 64 --models flow diffusion interpolant --runs a b c c2]

(c2 is (c) as two one-thread shards in parallel processes, as ``relax.shards: 2``.)

``--labels`` instead relaxes a labelled set (different rows from the benchmark's: the
next novel structures of each model) to the end without rejection, records each step's
energy above the hull, and prints, for single (reject_after, reject_above_hull) rules and
for margins that tighten later (reject_later), the stable structures a rejection would
have lost and the steps it saves: the data the defaults are chosen from. ``--trace``
reads a saved per-step trace instead of relaxing again.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402
from relax_lockstep import LockstepSettings, relax_batch  # noqa: E402

from onnes.crystals import read_table, to_structure  # noqa: E402
from onnes.screen.hull import ConvexHull, evaluate_stability  # noqa: E402
from onnes.mlip import load_mlip  # noqa: E402
from onnes.screen.relax import RelaxSettings, hull_reference_energy, relax_rows  # noqa: E402

STABLE = 0.1  # eV/atom, the funnel's stable_threshold


def novel_rows(demo: Path, models: list[str], count: int, skip: int) -> pd.DataFrame:
    """``count`` novel structures spread evenly over ``models`` (after the first ``skip`` per model)."""
    per_model = int(np.ceil(count / len(models)))
    frames = []
    for model in models:
        matched = read_table(demo / "screen" / model / "matched.parquet")
        frames.append(matched[matched.novel.astype(bool)].iloc[skip:skip + per_model])
    table = pd.concat(frames, ignore_index=True).head(count)
    return table[["id", "species", "frac_coords", "lattice", "source"]].reset_index(drop=True)


def perturbed_rows(test: Path, count: int, displacement: float, strain: float) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    table = read_table(test).sample(count, random_state=0).reset_index(drop=True)
    lattices, fracs = [], []
    for _, row in table.iterrows():
        lattice = np.reshape(row["lattice"], (3, 3)) * (1 + rng.uniform(-strain, strain))
        frac = np.reshape(row["frac_coords"], (-1, 3))
        frac = frac + rng.normal(0, displacement, frac.shape) @ np.linalg.inv(lattice)
        lattices.append(lattice.reshape(-1).tolist())
        fracs.append(np.mod(frac, 1.0).reshape(-1).tolist())
    table["lattice"], table["frac_coords"] = lattices, fracs
    table["source"] = "mp20-perturbed"
    return table[["id", "species", "frac_coords", "lattice", "source"]]


def struct_optimizer(model, table: pd.DataFrame, settings: RelaxSettings, device: str) -> pd.DataFrame:
    from chgnet.model import StructOptimizer

    optimizer = StructOptimizer(model=model, use_device=device)
    rows = []
    for _, row in table.iterrows():
        try:
            result = optimizer.relax(to_structure(row), fmax=settings.fmax, steps=settings.max_steps, verbose=False)
        except Exception as exc:  # isolated atoms and the like: recorded, as (c) records them
            rows.append({"id": row["id"], "relax_status": f"failed: {type(exc).__name__}", "energy": np.nan})
            continue
        trajectory = result["trajectory"]
        forces = np.asarray(trajectory.forces[-1])
        rows.append({"id": row["id"], "energy": float(trajectory.energies[-1]),
                     "relax_steps": len(trajectory.energies) - 2,  # start, steps, end again
                     "relax_status": "converged" if np.sqrt((forces**2).sum(1).max()) < settings.fmax else "max_steps",
                     "species": row["species"]})
    return pd.DataFrame(rows)


def e_above_hull(table: pd.DataFrame, result: pd.DataFrame, hull: ConvexHull) -> pd.Series:
    merged = result.drop(columns=["species"], errors="ignore").merge(table[["id", "species"]], on="id")
    stability = evaluate_stability(merged, hull)
    return pd.Series(stability.e_above_hull.to_numpy(), index=merged.id)


def _shard(rows: pd.DataFrame, settings: RelaxSettings, references: Path, elements: Path) -> pd.DataFrame:
    torch.set_num_threads(1)
    return relax_rows(load_mlip("chgnet"), rows, settings, hull_reference_energy(references, elements))


def sharded(rows: pd.DataFrame, settings: RelaxSettings, args) -> pd.DataFrame:
    """Two processes, one thread each, on the two halves of ``rows`` (``relax.shards: 2,
    threads: 1``); the time includes loading CHGNet in each."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    halves = [rows.iloc[: len(rows) // 2], rows.iloc[len(rows) // 2:]]
    references = args.demo / "screen" / "hull_references.parquet"
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(_shard, halves, [settings] * 2, [references] * 2, [args.elements] * 2))
    return pd.concat(parts, ignore_index=True)


def labels(args, mlip, reference, hull) -> None:
    settings = RelaxSettings.defaults(max_steps=args.max_steps, reject_above_hull=None, reject_volume_ratio=np.inf)
    if args.trace:  # a saved trace: the final step's energy above the hull decides stability
        steps = pd.read_parquet(args.trace)
        steps["e_above_hull"] = steps.e_per_atom - steps.hull_reference
        final = steps.groupby("id").e_above_hull.last()
        print(f"labelled set: {len(final)} structures of the saved trace {args.trace}")
    else:
        table = novel_rows(args.demo, args.models, args.novel, skip=args.skip)
        trace: list = []
        started = time.perf_counter()
        result = relax_rows(mlip, table, settings, reference, trace=trace)
        seconds = time.perf_counter() - started
        steps = pd.DataFrame(trace, columns=["id", "step", "e_per_atom", "hull_reference", "fmax", "volume_ratio"])
        steps["e_above_hull"] = steps.e_per_atom - steps.hull_reference
        final = e_above_hull(table, result, hull)
        if args.save:
            steps.to_parquet(args.save)
        print(f"hardware: {hardware()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"labelled set: {len(table)} novel structures from {', '.join(args.models)} (rows {args.skip}.. per "
              f"model), relaxed without rejection to fmax {settings.fmax} or {settings.max_steps} steps in "
              f"{seconds:.0f} s; status {result.relax_status.value_counts().to_dict()}")
    stable_ids = set(final.index[final <= STABLE])
    total_steps = int(steps.groupby("id").step.max().add(1).sum())
    print(f"stable (e_above_hull <= {STABLE}): {len(stable_ids)}; {total_steps} steps in all")
    stable_steps = steps[steps.id.isin(stable_ids)]
    print("largest energy above the hull a finally-stable structure still had at or after step k (eV/atom):")
    for k in (10, 20, 30, 50, 100, 150, 200, 300):
        late = stable_steps[stable_steps.step >= k]
        print(f"  k={k:3d}: {late.e_above_hull.max():.3f}; largest volume ratio {late.volume_ratio.max():.2f}, "
              f"smallest {late.volume_ratio.min():.2f}")
    n_steps = steps.groupby("id").step.max().add(1)

    def rejected_at(schedule) -> pd.Series:  # first step each structure would be rejected at
        hits = [steps[(steps.step >= k) & (steps.e_above_hull > m)].groupby("id").step.min() for k, m in schedule]
        return pd.concat(hits, axis=1).min(axis=1).dropna() if hits else pd.Series(dtype=float)

    rows = []
    schedules = [[(k, m)] for k in (10, 20, 30, 50) for m in (0.3, 0.5, 0.75, 1.0, 1.5)] + [
        [(50, 3.0)], [(50, 3.0), (100, 1.5)], [(50, 3.0), (100, 1.0)], [(50, 3.0), (100, 1.5), (200, 0.75)],
        [(50, 3.0), (100, 1.0), (200, 0.5)], [(50, 3.0), (150, 1.0), (300, 0.5)], [(50, 2.0), (100, 1.0), (200, 0.5)]]
    for schedule in schedules:
        first = rejected_at(schedule)
        saved = (n_steps.loc[first.index] - first - 1).clip(lower=0).sum()
        rows.append({"(from step, margin) ...": ", ".join(f"({k}, {m})" for k, m in schedule),
                     "rejected": len(first), "stable lost": len(set(first.index) & stable_ids),
                     "steps run": f"{1 - saved / total_steps:.0%}"})
    print(pd.DataFrame(rows).to_string(index=False))


def benchmark(args, mlip, reference, hull) -> None:
    novel = novel_rows(args.demo, args.models, args.novel, skip=0)
    perturbed = perturbed_rows(args.demo / "data" / "mp20" / "test.parquet", args.perturbed, 0.1, 0.03)
    table = pd.concat([novel, perturbed], ignore_index=True)
    settings = RelaxSettings.defaults(max_steps=args.max_steps, **({"reject_later": []} if args.no_later_margins else {}))
    subsets = {"novel": novel, "perturbed MP-20": perturbed}
    runs, seconds = {}, {}
    for name in args.runs:  # each subset timed on its own; the mixed set is their sum
        results = []
        for subset, rows in subsets.items():
            started = time.perf_counter()
            if name == "a":
                results.append(struct_optimizer(mlip.model, rows, settings, args.device))
            elif name == "b":
                results.append(relax_batch(mlip.model, rows, LockstepSettings(max_steps=settings.max_steps)))
            elif name == "c":
                results.append(relax_rows(mlip, rows, settings, reference))
            else:  # c2: as the workflow runs on 2 cores, two one-thread shards side by side
                results.append(sharded(rows, settings, args))
            seconds[name, subset] = time.perf_counter() - started
        runs[name] = pd.concat(results, ignore_index=True).set_index("id")
    labels_ = {"a": "(a) StructOptimizer, one at a time", "b": "(b) lockstep batches of 64",
               "c": f"(c) in-flight, {settings.batch_atoms} atoms/call, early rejection",
               "c2": "(c) as 2 one-thread shards"}
    print(f"hardware: {hardware()}; device {args.device}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{len(novel)} novel structures from {', '.join(args.models)} + {len(perturbed)} MP-20 test structures "
          f"(sites displaced 0.1 A, cells strained <= 3 %); FIRE + FrechetCellFilter, fmax {settings.fmax} eV/A, "
          f"<= {settings.max_steps} steps; (c) rejects after {settings.reject_after} steps at "
          f"> {settings.reject_above_hull} eV/atom above the hull (then {settings.reject_later}: (from step, margin)) "
          f"or a volume change > x{settings.reject_volume_ratio}")
    lines, stable, hulls = [], {}, {}
    for name, result in runs.items():
        hulls[name] = e_hull = e_above_hull(table, result.reset_index(), hull)
        stable[name] = set(e_hull.index[e_hull <= STABLE])
        total = sum(seconds[name, subset] for subset in subsets)
        line = {"relaxer": labels_[name], "seconds": round(total, 1),
                "mixed /s": round(len(table) / total, 3)}
        for subset, rows in subsets.items():
            line[f"{subset} /s"] = round(len(rows) / seconds[name, subset], 3)
        if "a" in runs:
            line["mixed ratio to (a)"] = round(sum(seconds["a", s] for s in subsets) / total, 2)
            for subset in subsets:
                line[f"{subset} ratio"] = round(seconds["a", subset] / seconds[name, subset], 2)
        line["statuses"] = result.relax_status.value_counts().to_dict()
        line["stable"] = len(stable[name])
        lines.append(line)
    print(pd.DataFrame(lines).to_string(index=False))
    if len(runs) > 1:
        names = sorted(runs)
        sizes = dict(zip(table.id, table.species.map(len)))
        converged = set.intersection(*(set(r.index[r.relax_status == "converged"]) for r in runs.values()))
        energy = pd.DataFrame({n: runs[n].energy / runs[n].index.map(sizes) for n in names}
                              ).loc[sorted(converged)]
        spread = 1000 * (energy.max(axis=1) - energy.min(axis=1))
        print(f"energy spread where all converge ({len(converged)} structures): max {spread.max():.3f} meV/atom, "
              f"median {spread.median():.4f}")
        for n in names[1:]:
            only_a, only_n = stable[names[0]] - stable[n], stable[n] - stable[names[0]]
            print(f"stable sets {names[0]} and {n}: " + ("identical" if not (only_a or only_n) else
                  f"{len(only_a)} only in {names[0]}, {len(only_n)} only in {n}"))
            for sid in sorted(only_a | only_n):
                row_a, row_n = runs[names[0]].loc[sid], runs[n].loc[sid]
                print(f"   {sid}: {names[0]} {row_a.relax_status} after {row_a.relax_steps} steps, e_above_hull "
                      f"{hulls[names[0]][sid]:.3f}; {n} {row_n.relax_status} after {row_n.relax_steps} steps, "
                      f"e_above_hull {hulls[n][sid]:.3f} {row_n.get('relax_error') or ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a campaign's results directory (results/demo)")
    parser.add_argument("--elements", type=Path, required=True, help="MP elemental reference entries (json.gz)")
    parser.add_argument("--models", nargs="+", default=["flow", "diffusion", "interpolant"])
    parser.add_argument("--novel", type=int, default=256)
    parser.add_argument("--perturbed", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--runs", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c", "c2"],
                        help="c2: the in-flight relaxer as 2 one-thread shards in parallel processes")
    parser.add_argument("--no-later-margins", action="store_true",
                        help="(c) without the tighter margins later in a relaxation (reject_later: [])")
    parser.add_argument("--labels", action="store_true", help="tune early rejection instead (see above)")
    parser.add_argument("--skip", type=int, default=200, help="--labels: novel rows per model to skip")
    parser.add_argument("--save", type=Path, help="--labels: write the per-step trace here (parquet)")
    parser.add_argument("--trace", type=Path, help="--labels: analyse this saved trace instead of relaxing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    mlip = load_mlip("chgnet", args.device)
    references = args.demo / "screen" / "hull_references.parquet"
    hull = ConvexHull.from_files(references, args.elements)
    reference = hull_reference_energy(references, args.elements)
    (labels if args.labels else benchmark)(args, mlip, reference, hull)


if __name__ == "__main__":
    main()
