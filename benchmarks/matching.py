"""Benchmark: uniqueness and novelty of 10,000 generated structures against a
30,000-structure training set (StructureMatcher bucketed by reduced formula).

    python benchmarks/matching.py --data results/default/data [--workers 2]

The "generated" set is a stress test: half are perturbed copies of training structures
(every one must be found: known), half are WBM structures outside the training set.
Prints counts, wall time and the hardware; the goal is under 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

from onnes.crystals import read_table  # noqa: E402
from onnes.matching import Tolerances, find_duplicates, find_known, reduced_formulas  # noqa: E402


def perturbed(table: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    out = table.copy()
    out["frac_coords"] = [
        (np.mod(np.asarray(f) + rng.normal(0, 0.005, len(f)), 1.0)).tolist() for f in out.frac_coords
    ]
    out["lattice"] = [(np.asarray(lat) * rng.uniform(0.98, 1.02)).tolist() for lat in out.lattice]
    out["id"] = "copy-" + out["id"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="results/{campaign}/data with mp20, mpts52, wbm")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--generated", type=int, default=10000)
    parser.add_argument("--reference", type=int, default=30000)
    args = parser.parse_args()
    columns = ["id", "species", "frac_coords", "lattice"]
    mp20 = read_table(args.data / "mp20/curated.parquet")[columns]
    mpts52 = read_table(args.data / "mpts52/curated.parquet")[columns]
    wbm = read_table(args.data / "wbm/curated.parquet")[columns]
    rng = np.random.default_rng(0)
    extra = args.reference - len(mp20) - len(mpts52)
    reference = pd.concat([mp20, mpts52, wbm.iloc[:extra]], ignore_index=True)
    half = args.generated // 2
    copies = perturbed(reference.sample(half, random_state=0), rng)
    outside = wbm.iloc[extra:extra + (args.generated - half)]
    generated = pd.concat([copies, outside], ignore_index=True)
    tol = Tolerances()

    started = time.perf_counter()
    formulas = reduced_formulas(generated)
    duplicates = find_duplicates(generated, tol, args.workers, formula=formulas)
    t_unique = time.perf_counter() - started
    unique = generated[~generated.id.isin(duplicates.keys())]
    known = find_known(unique, reference, tol, args.workers)
    total = time.perf_counter() - started

    copies_found = sum(i.startswith("copy-") for i in known)
    copies_unique = int(unique.id.str.startswith("copy-").sum())
    print(f"hardware: {hardware()}; workers: {args.workers}")
    print(f"generated {len(generated)} ({half} perturbed training copies, {len(outside)} WBM outside training); "
          f"reference {len(reference)}")
    print(f"unique: {len(unique)} ({len(duplicates)} duplicates) in {t_unique:.1f} s")
    print(f"known (not novel): {len(known)}; perturbed copies found: {copies_found} of {copies_unique} unique")
    print(f"novel: {len(unique) - len(known)}; total wall time {total:.1f} s ({total / 60:.2f} min)")


if __name__ == "__main__":
    main()
