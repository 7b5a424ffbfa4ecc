"""Benchmark: CHGNet relaxation of generated and perturbed MP-20 structures, three ways,
in one run: (a) chgnet's StructOptimizer one structure at a time, (b) the lockstep
relaxer Onnes shipped before (benchmarks/relax_lockstep.py), (c) the in-flight relaxer
with early rejection (onnes.screen.relax). Prints structures/s, the ratios, energy
agreement where all converge, and the stable sets (e_above_hull <= 0.1 eV/atom).

    python benchmarks/relax.py --demo results/demo --elements <mp_elemental_reference_entries.json.gz> \\
        [--novel 256 --perturbed 64 --models flow diffusion interpolant]

``--labels`` instead relaxes a labelled set (different rows from the benchmark's: the
next novel structures of each model) to the end without rejection, records each step's
energy above the hull, and prints, for each (reject_after, reject_above_hull), the stable
structures a rejection would have lost and the steps it saves: the data the defaults
are chosen from.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402
from relax_lockstep import LockstepSettings, relax_batch  # noqa: E402

from onnes.crystals import read_table, to_structure  # noqa: E402
from onnes.screen.hull import ConvexHull, evaluate_stability  # noqa: E402
from onnes.screen.relax import RelaxSettings, hull_reference_energy, load_chgnet, relax_rows  # noqa: E402

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
            rows.append({"id": row["id"], "relax_status": f"failed: {type(exc).__name__}", "energy_chgnet": np.nan})
            continue
        trajectory = result["trajectory"]
        forces = np.asarray(trajectory.forces[-1])
        rows.append({"id": row["id"], "energy_chgnet": float(trajectory.energies[-1]),
                     "relax_steps": len(trajectory.energies) - 2,  # start, steps, end again
                     "relax_status": "converged" if np.sqrt((forces**2).sum(1).max()) < settings.fmax else "max_steps",
                     "species": row["species"]})
    return pd.DataFrame(rows)


def e_above_hull(table: pd.DataFrame, result: pd.DataFrame, hull: ConvexHull) -> pd.Series:
    merged = result.drop(columns=["species"], errors="ignore").merge(table[["id", "species"]], on="id")
    stability = evaluate_stability(merged, hull)
    return pd.Series(stability.e_above_hull.to_numpy(), index=merged.id)


def labels(args, model, reference, hull) -> None:
    table = novel_rows(args.demo, args.models, args.novel, skip=args.skip)
    settings = RelaxSettings(max_steps=args.max_steps, reject_above_hull=None, reject_volume_ratio=np.inf)
    trace: list = []
    started = time.perf_counter()
    result = relax_rows(model, table, settings, reference, trace=trace)
    seconds = time.perf_counter() - started
    steps = pd.DataFrame(trace, columns=["id", "step", "e_per_atom", "hull_reference", "fmax", "volume_ratio"])
    steps["e_above_hull"] = steps.e_per_atom - steps.hull_reference
    final = e_above_hull(table, result, hull)
    if args.save:
        steps.to_parquet(args.save)
    stable_ids = set(final.index[final <= STABLE])
    total_steps = int(steps.groupby("id").step.max().add(1).sum())
    print(f"hardware: {hardware()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"labelled set: {len(table)} novel structures from {', '.join(args.models)} (rows {args.skip}.. per "
          f"model), relaxed without rejection to fmax {settings.fmax} or {settings.max_steps} steps in {seconds:.0f} s; "
          f"status {result.relax_status.value_counts().to_dict()}; stable (e_above_hull <= {STABLE}): "
          f"{len(stable_ids)}")
    stable_steps = steps[steps.id.isin(stable_ids)]
    print("largest energy above the hull a finally-stable structure still had at or after step k (eV/atom):")
    for k in (10, 20, 30, 50, 100):
        late = stable_steps[stable_steps.step >= k]
        print(f"  k={k:3d}: {late.e_above_hull.max():.3f}; largest volume ratio {late.volume_ratio.max():.2f}, "
              f"smallest {late.volume_ratio.min():.2f}")
    rows = []
    for k in (10, 20, 30, 50):
        for margin in (0.3, 0.5, 0.75, 1.0, 1.5):
            after = steps[(steps.step >= k) & (steps.e_above_hull > margin)]
            first = after.groupby("id").step.min()
            kept_steps = total_steps - int((steps.groupby("id").step.max().add(1) - first.add(1)).dropna().sum())
            rows.append({"reject_after": k, "margin": margin, "rejected": len(first),
                         "stable lost": len(set(first.index) & stable_ids),
                         "steps run": f"{kept_steps / total_steps:.0%}"})
    print(pd.DataFrame(rows).to_string(index=False))


def benchmark(args, model, reference, hull) -> None:
    novel = novel_rows(args.demo, args.models, args.novel, skip=0)
    perturbed = perturbed_rows(args.demo / "data" / "mp20" / "test.parquet", args.perturbed, 0.1, 0.03)
    table = pd.concat([novel, perturbed], ignore_index=True)
    settings = RelaxSettings(max_steps=args.max_steps)
    runs = {}
    for name in args.runs:
        started = time.perf_counter()
        if name == "a":
            result = struct_optimizer(model, table, settings, args.device)
        elif name == "b":
            result = relax_batch(model, table, LockstepSettings(max_steps=settings.max_steps))
        else:
            result = relax_rows(model, table, settings, reference)
        runs[name] = (time.perf_counter() - started, result.set_index("id"))
    labels_ = {"a": "(a) StructOptimizer, one at a time", "b": "(b) lockstep batches of 64",
               "c": f"(c) in-flight, {settings.batch_atoms} atoms/call, early rejection"}
    print(f"hardware: {hardware()}; device {args.device}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{len(novel)} novel structures from {', '.join(args.models)} + {len(perturbed)} MP-20 test structures "
          f"(sites displaced 0.1 A, cells strained <= 3 %); FIRE + FrechetCellFilter, fmax {settings.fmax} eV/A, "
          f"<= {settings.max_steps} steps; (c) rejects after {settings.reject_after} steps at "
          f"> {settings.reject_above_hull} eV/atom above the hull or a volume change > x{settings.reject_volume_ratio}")
    subsets = {"mixed": table.id, "perturbed MP-20": perturbed.id, "novel": novel.id}
    lines, stable = [], {}
    for name, (seconds, result) in runs.items():
        e_hull = e_above_hull(table, result.reset_index(), hull)
        stable[name] = set(e_hull.index[e_hull <= STABLE])
        # each subset's time is its share of structure-steps (one run covers both subsets)
        steps = result.relax_steps.fillna(0).astype(float) + 1
        line = {"relaxer": labels_[name], "seconds": round(seconds, 1),
                "statuses": result.relax_status.value_counts().to_dict()}
        for subset, ids in subsets.items():
            share = steps.reindex(ids).sum() / steps.sum()
            line[f"{subset} structures/s"] = round(len(ids) / (seconds * share), 3)
        lines.append(line)
    print(pd.DataFrame(lines).to_string(index=False))
    if "a" in runs:
        base = runs["a"][0]
        for name, (seconds, _) in runs.items():
            if name != "a":
                print(f"ratio {name}/a (mixed set, wall time): {base / seconds:.2f}x")
    if "a" in runs and "c" in runs and len(args.runs) > 1:
        print("perturbed MP-20 subset alone: run benchmarks/relax.py --novel 0 for its own wall-time ratio")
    if len(runs) > 1:
        names = list(runs)
        converged = set.intersection(*(set(r.index[r.relax_status == "converged"]) for _, r in runs.values()))
        energy = pd.DataFrame({n: runs[n][1].energy_chgnet / runs[n][1].index.map(
            dict(zip(table.id, table.species.map(len)))) for n in names}).loc[sorted(converged)]
        diffs = 1000 * (energy.max(axis=1) - energy.min(axis=1))
        print(f"energy spread where all converge ({len(converged)}): max {diffs.max():.3f} meV/atom, "
              f"median {diffs.median():.4f}")
        for n in names:
            print(f"stable set {n}: {len(stable[n])} structures")
        reference_name = names[0]
        for n in names[1:]:
            only_ref, only_n = stable[reference_name] - stable[n], stable[n] - stable[reference_name]
            print(f"stable {reference_name} vs {n}: identical" if not (only_ref or only_n) else
                  f"stable {reference_name} vs {n}: only {reference_name} {sorted(only_ref)}; only {n} {sorted(only_n)}")
            for sid in sorted(only_ref | only_n):
                a_row, n_row = runs[reference_name][1].loc[sid], runs[n][1].loc[sid]
                print(f"   {sid}: {reference_name} {a_row.relax_status} {a_row.relax_steps} steps, "
                      f"{n} {n_row.relax_status} {n_row.relax_steps} steps {n_row.get('relax_error') or ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a campaign's results directory (results/demo)")
    parser.add_argument("--elements", type=Path, required=True, help="MP elemental reference entries (json.gz)")
    parser.add_argument("--models", nargs="+", default=["flow", "diffusion", "interpolant"])
    parser.add_argument("--novel", type=int, default=256)
    parser.add_argument("--perturbed", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--runs", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    parser.add_argument("--labels", action="store_true", help="tune early rejection instead (see above)")
    parser.add_argument("--skip", type=int, default=200, help="--labels: novel rows per model to skip")
    parser.add_argument("--save", type=Path, help="--labels: write the per-step trace here (parquet)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = load_chgnet(args.device)
    references = args.demo / "screen" / "hull_references.parquet"
    hull = ConvexHull.from_files(references, args.elements)
    reference = hull_reference_energy(references, args.elements)
    (labels if args.labels else benchmark)(args, model, reference, hull)


if __name__ == "__main__":
    main()
