"""Benchmark: batched CHGNet relaxation against chgnet's own StructOptimizer on the same
perturbed MP-20 structures, in one run; prints energy agreement and the throughput ratio.

    python benchmarks/relax.py --table results/demo/data/mp20/test.parquet [--count 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

from onnes.crystals import read_table, to_structure  # noqa: E402
from onnes.screen.relax import RelaxSettings, load_chgnet, relax_batch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--displacement", type=float, default=0.1, help="random site displacement (A)")
    parser.add_argument("--strain", type=float, default=0.03, help="random isotropic cell strain")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    from chgnet.model import StructOptimizer

    rng = np.random.default_rng(0)
    table = read_table(args.table).sample(args.count, random_state=0).reset_index(drop=True)
    lattices, fracs = [], []
    for _, row in table.iterrows():
        lattice = np.reshape(row["lattice"], (3, 3)) * (1 + rng.uniform(-args.strain, args.strain))
        frac = np.reshape(row["frac_coords"], (-1, 3))
        frac = frac + rng.normal(0, args.displacement, frac.shape) @ np.linalg.inv(lattice)
        lattices.append(lattice.reshape(-1).tolist())
        fracs.append(np.mod(frac, 1.0).reshape(-1).tolist())
    table["lattice"], table["frac_coords"] = lattices, fracs
    model = load_chgnet(args.device)
    settings = RelaxSettings()

    started = time.perf_counter()
    batched = relax_batch(model, table, settings)
    t_batched = time.perf_counter() - started

    optimizer = StructOptimizer(model=model, use_device=args.device)
    started = time.perf_counter()
    reference = []
    for _, row in table.iterrows():
        result = optimizer.relax(to_structure(row), fmax=settings.fmax, steps=settings.max_steps, verbose=False)
        trajectory = result["trajectory"]
        forces = np.asarray(trajectory.forces[-1])
        reference.append((trajectory.energies[-1] / len(row["species"]), len(trajectory.energies) - 1,
                          float(np.sqrt((forces**2).sum(1).max()))))
    t_reference = time.perf_counter() - started

    both = [(b.energy_chgnet_per_atom, r[0]) for (_, b), r in zip(batched.iterrows(), reference)
            if b.relax_converged and r[2] < settings.fmax * 1.5]
    diffs = np.abs([1000 * (a - b) for a, b in both])
    print(f"hardware: {hardware()}; device {args.device}; torch {torch.__version__}")
    print(f"{args.count} MP-20 structures, sites displaced {args.displacement} A, cells strained <= {args.strain}; "
          f"FIRE + FrechetCellFilter, fmax {settings.fmax} eV/A, <= {settings.max_steps} steps")
    print(f"batched onnes: {t_batched:.1f} s ({args.count / t_batched:.2f} structures/s), "
          f"converged {int(batched.relax_converged.sum())}, mean steps {batched.relax_steps.mean():.1f}")
    print(f"StructOptimizer: {t_reference:.1f} s ({args.count / t_reference:.2f} structures/s), "
          f"mean steps {np.mean([r[1] for r in reference]):.1f}")
    print(f"energy difference where both converge ({len(both)}): max {diffs.max():.3f} meV/atom, "
          f"mean {diffs.mean():.3f}; within 10 meV/atom: {(diffs <= 10).sum()} of {len(both)}")
    print(f"throughput ratio (batched / StructOptimizer): {t_reference / t_batched:.2f}x")


if __name__ == "__main__":
    main()
