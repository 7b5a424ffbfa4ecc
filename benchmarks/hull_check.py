"""Check of the stability stage against the Materials Project's own e_above_hull.

1. Hull implementation: MP-20 structures' own DFT formation energies, evaluated on the
   hull this pipeline builds, against MP's e_above_hull.
2. Whole pipeline: the same structures relaxed by batched CHGNet, formation energies
   from CHGNet energies and MP elemental references, e_above_hull on the same hull.
Prints MAE and the fraction within 0.1 eV/atom for both, and the formation-energy MAE
with and without (wrongly) applying MP2020 corrections again to CHGNet energies.

    python benchmarks/hull_check.py --table results/default/data/mp20/test.parquet \
        --mirror ../shared/data [--count 200]
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
from onnes.screen.hull import (  # noqa: E402
    ConvexHull, element_counts, build_references, elemental_potentials, evaluate_stability, mp2020_corrected_energy)
from onnes.screen.relax import RelaxSettings, load_chgnet, relax_rows  # noqa: E402
from pymatgen.core import Composition  # noqa: E402


def report(label: str, predicted: np.ndarray, reference: np.ndarray) -> None:
    error = np.abs(predicted - reference)
    error = error[np.isfinite(error)]
    print(f"{label}: n={len(error)}  MAE {error.mean():.4f} eV/atom  within 0.1 eV/atom "
          f"{100 * (error <= 0.1).mean():.1f} %  median {np.median(error):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True, help="curated MP-20 table (e_above_hull column)")
    parser.add_argument("--mirror", type=Path, required=True)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(hardware(), "| device:", args.device)

    table = read_table(args.table).sample(args.count, random_state=0).reset_index(drop=True)
    hull = ConvexHull(build_references(args.mirror / "hull_refs/mp20_formation_energies.parquet"),
                      elemental_potentials(args.mirror / "hull_refs/mp_elemental_reference_entries_2023-02-07.json.gz"))
    mp_hull = table.e_above_hull.to_numpy(float)

    started = time.perf_counter()
    dft = np.array([hull.e_above_hull(Composition(element_counts(s)), e)[0]
                    for s, e in zip(table.species, table.e_form_per_atom)])
    print(f"hull evaluation: {len(table)} structures in {time.perf_counter() - started:.1f} s")
    report("1. DFT formation energies on this hull vs MP e_above_hull", dft, mp_hull)

    started = time.perf_counter()
    relaxed = relax_rows(load_chgnet(args.device), table, RelaxSettings.defaults(reject_above_hull=None))
    print(f"CHGNet relaxation: {len(table)} structures in {time.perf_counter() - started:.1f} s; "
          f"{relaxed.relax_status.value_counts().to_dict()}")
    stability = evaluate_stability(relaxed, hull)
    report("2. CHGNet-relaxed e_above_hull vs MP e_above_hull", stability.e_above_hull.to_numpy(float), mp_hull)
    report("   CHGNet formation energy vs MP", stability.e_form_per_atom.to_numpy(float),
           table.e_form_per_atom.to_numpy(float))
    doubled = []
    for (_, row), energy in zip(relaxed.iterrows(), relaxed.energy_chgnet):
        structure = to_structure(row)
        doubled.append(hull.formation_energy(structure.composition, mp2020_corrected_energy(structure, energy)))
    report("   same, MP2020 corrections applied again (wrong)", np.array(doubled),
           table.e_form_per_atom.to_numpy(float))


if __name__ == "__main__":
    main()
