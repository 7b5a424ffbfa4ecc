"""Each MLIP's energy footing, measured: MP-20 structures relaxed by the MLIP, their
formation energies (MP elemental references) against MP's DFT values, with and without
the MP2020 corrections applied to the MLIP's energies, and e_above_hull on this
pipeline's hull (with the footing the MLIP declares) against MP's.

A potential trained on MP2020-corrected energies (CHGNet) meets MP without corrections;
one trained on raw GGA/GGA+U energies (SevenNet) meets it with them. The footing an MLIP
declares (onnes.mlip) must be the one with the smaller MAE.

    python benchmarks/hull_check.py --table results/demo/data/mp20/test.parquet \
        --mirror ../shared/data --calculators chgnet sevennet-0 sevennet-l3i5 [--count 60]

Also checks the hull itself: MP's own DFT formation energies on this hull against MP's
e_above_hull.
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
from onnes.mlip import load_mlip  # noqa: E402
from onnes.screen.hull import (  # noqa: E402
    ConvexHull, element_counts, build_references, elemental_potentials, evaluate_stability, mp2020_corrected_energy)
from onnes.screen.relax import RelaxSettings, relax_rows  # noqa: E402
from pymatgen.core import Composition  # noqa: E402


def mae(predicted: np.ndarray, reference: np.ndarray) -> tuple[float, float, int]:
    error = np.abs(predicted - reference)
    error = error[np.isfinite(error)]
    return float(error.mean()), float((error <= 0.1).mean()), len(error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True, help="curated MP-20 table (e_above_hull column)")
    parser.add_argument("--mirror", type=Path, required=True)
    parser.add_argument("--calculators", nargs="+", default=["chgnet", "sevennet-0", "sevennet-l3i5"])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(hardware(), "| device:", args.device, "| threads:", args.threads)

    table = read_table(args.table).sample(args.count, random_state=0).reset_index(drop=True)
    hull = ConvexHull(build_references(args.mirror / "hull_refs/mp20_formation_energies.parquet"),
                      elemental_potentials(args.mirror / "hull_refs/mp_elemental_reference_entries_2023-02-07.json.gz"))
    mp_hull, mp_form = table.e_above_hull.to_numpy(float), table.e_form_per_atom.to_numpy(float)
    dft = np.array([hull.e_above_hull(Composition(element_counts(s)), e)[0]
                    for s, e in zip(table.species, table.e_form_per_atom)])
    print(f"hull check: MP's DFT formation energies on this hull vs MP e_above_hull: MAE {mae(dft, mp_hull)[0]:.4f}")

    print("\n| MLIP | declared footing | E_form MAE as is | E_form MAE with MP2020 | E_hull MAE (declared footing) "
          "| within 0.1 | converged | relax time (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.calculators:
        mlip = load_mlip(name, args.device)
        started = time.perf_counter()
        relaxed = relax_rows(mlip, table, RelaxSettings.defaults(reject_above_hull=None, fmax=0.05))
        seconds = time.perf_counter() - started
        as_is, corrected = [], []
        for (_, row), energy in zip(relaxed.iterrows(), relaxed.energy):
            structure = to_structure(row)
            as_is.append(hull.formation_energy(structure.composition, energy))
            try:
                corrected.append(hull.formation_energy(structure.composition,
                                                       mp2020_corrected_energy(structure, energy)))
            except ValueError:
                corrected.append(np.nan)
        e_hull = evaluate_stability(relaxed, hull, mlip.footing).e_above_hull.to_numpy(float)
        hull_mae, within, n = mae(e_hull, mp_hull)
        print(f"| {name} | {mlip.footing} | {mae(np.array(as_is), mp_form)[0]:.3f} | "
              f"{mae(np.array(corrected), mp_form)[0]:.3f} | {hull_mae:.3f} | {100 * within:.0f} % (n={n}) | "
              f"{int(relaxed.relax_converged.sum())}/{len(relaxed)} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
