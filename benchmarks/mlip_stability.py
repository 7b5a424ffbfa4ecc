"""Which MLIP should confirm: stability calls of each MLIP, and of CHGNet confirmed by
each, against DFT on WBM crystals (Wang et al., npj Comput. Mater. 7, 77, 2021), the
classification Matbench Discovery scores (Riebesell et al., 2025).

WBM rows of the mirror (DFT-relaxed structures with MP2020-compatible formation
energies) are put on the MP-20 hull (the mirror's 34k MP entries, WBM itself left out):
their DFT e_above_hull is the label. Each MLIP relaxes them from the DFT geometry to
fmax 0.05 eV/A (<= 500 steps, as the confirming stage), its e_above_hull on the same hull
with its declared footing. "chgnet+X" calls a crystal stable only when both do, which is
what `msun_confirmed` asks. Printed per threshold (E_hull <= 0, Matbench's, and <= 0.1):
precision, recall, F1, MAE of e_above_hull, and relaxation time.

    python benchmarks/mlip_stability.py --mirror ../shared/data [--count 120] [--max-atoms 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Composition, Structure

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

from onnes.crystals import from_structures  # noqa: E402
from onnes.mlip import load_mlip  # noqa: E402
from onnes.screen.hull import (  # noqa: E402
    ConvexHull, build_references, element_counts, elemental_potentials, evaluate_stability)
from onnes.screen.relax import RelaxSettings, relax_rows  # noqa: E402


def wbm_rows(mirror: Path, count: int, max_atoms: int) -> pd.DataFrame:
    raw = pd.read_csv(mirror / "wbm/sample.csv.gz").sample(frac=1.0, random_state=0)
    structures, ids, energies = [], [], []
    for index, row in raw.iterrows():
        structure = Structure.from_str(row.cif, fmt="cif")
        if len(structure) <= max_atoms and structure.is_ordered:
            structures.append(structure)
            ids.append(f"wbm-{index}")
            energies.append(float(row.formation_energy_per_atom))
        if len(structures) == count:
            break
    table = from_structures(structures, ids, "wbm")
    table["e_form_dft"] = energies
    return table


def scores(predicted: np.ndarray, label: np.ndarray, limit: float) -> dict:
    ok = np.isfinite(predicted)
    p, t = predicted[ok] <= limit, label[ok] <= limit
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    precision = tp / (tp + fp) if tp + fp else np.nan
    recall = tp / (tp + fn) if tp + fn else np.nan
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"n": int(ok.sum()), "called stable": int(p.sum()), "precision": precision, "recall": recall, "F1": f1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, required=True)
    parser.add_argument("--calculators", nargs="+", default=["chgnet", "sevennet-0", "sevennet-l3i5"])
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--max-atoms", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(hardware(), "| device:", args.device, "| threads:", args.threads)
    hull = ConvexHull(build_references(args.mirror / "hull_refs/mp20_formation_energies.parquet"),
                      elemental_potentials(args.mirror / "hull_refs/mp_elemental_reference_entries_2023-02-07.json.gz"))
    table = wbm_rows(args.mirror, args.count, args.max_atoms)
    label = np.array([e - hull.hull_energy(Composition(element_counts(s)))[0]
                      for s, e in zip(table.species, table.e_form_dft)])
    print(f"{len(table)} WBM crystals (<= {args.max_atoms} atoms); DFT stable at E_hull <= 0: "
          f"{(label <= 0).sum()}, <= 0.1: {(label <= 0.1).sum()}")
    settings = RelaxSettings.defaults(fmax=0.05, max_steps=500, reject_above_hull=None, batch_atoms=512)
    e_hull, seconds = {}, {}
    for name in args.calculators:
        mlip = load_mlip(name, args.device)
        started = time.perf_counter()
        relaxed = relax_rows(mlip, table, settings)
        seconds[name] = time.perf_counter() - started
        values = evaluate_stability(relaxed, hull, mlip.footing).e_above_hull.to_numpy(float)
        values[~relaxed.relax_converged.to_numpy(bool)] = np.nan  # unconverged: not judged
        e_hull[name] = values
        print(f"{name}: {seconds[name]:.0f} s, {int(relaxed.relax_converged.sum())}/{len(relaxed)} converged",
              flush=True)
    if "chgnet" in e_hull:
        for name in [n for n in args.calculators if n != "chgnet"]:
            # both must call it stable: the confirmed verdict is the larger of the two E_hull
            e_hull[f"chgnet+{name}"] = np.fmax(e_hull["chgnet"], e_hull[name])
            e_hull[f"chgnet+{name}"][np.isnan(e_hull["chgnet"]) | np.isnan(e_hull[name])] = np.nan
    rows = []
    for name, values in e_hull.items():
        error = np.abs(values - label)
        for limit in (0.0, 0.1):
            rows.append({"MLIP": name, "threshold": limit, **scores(values, label, limit),
                         "E_hull MAE": float(np.nanmean(error)), "relax s": seconds.get(name)})
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
