"""Relaxation throughput of each MLIP through the same batched relaxer, in one run.

Two tasks on the same structures (MP-20 test cells, atoms displaced by 0.05 A and cells
strained by 3 %, as a generated sample looks to a relaxer):
- pre-relaxation: from the perturbed cells to fmax 0.1 eV/A, at most 500 steps;
- confirmation: from the pre-relaxed (CHGNet) geometry to fmax 0.05 eV/A, at most 500
  steps (what the confirming stage does).
Prints structures/s, FIRE steps and the ratio to CHGNet on the same task.

    python benchmarks/mlip_throughput.py --table results/demo/data/mp20/test.parquet \
        [--count 32] [--calculators chgnet sevennet-0 sevennet-l3i5] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

from onnes.crystals import read_table  # noqa: E402
from onnes.mlip import load_mlip  # noqa: E402
from onnes.screen.relax import RelaxSettings, relax_rows  # noqa: E402


def perturbed(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = table.copy()
    for i, row in out.iterrows():
        lattice = np.reshape(row.lattice, (3, 3)) @ (np.eye(3) + rng.normal(0, 0.03, (3, 3)))
        frac = np.reshape(row.frac_coords, (-1, 3)) + rng.normal(0, 0.05, (len(row.species), 3)) @ np.linalg.inv(lattice)
        out.at[i, "lattice"] = lattice.reshape(-1).tolist()
        out.at[i, "frac_coords"] = np.mod(frac, 1.0).reshape(-1).tolist()
    return out


def timed(name: str, table: pd.DataFrame, settings: RelaxSettings, device: str) -> tuple[pd.DataFrame, float]:
    mlip = load_mlip(name, device)
    started = time.perf_counter()
    result = relax_rows(mlip, table, settings)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--calculators", nargs="+", default=["chgnet", "sevennet-0", "sevennet-l3i5"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(hardware(), "| device:", args.device, "| threads:", args.threads)
    table = read_table(args.table).sample(args.count, random_state=1).reset_index(drop=True)
    table = perturbed(table)
    atoms = sum(len(s) for s in table.species)
    print(f"{len(table)} structures, {atoms} atoms ({atoms / len(table):.1f} per cell)")
    pre_settings = RelaxSettings.defaults(fmax=0.1, max_steps=500, reject_above_hull=None)
    confirm_settings = RelaxSettings.defaults(fmax=0.05, max_steps=500, reject_above_hull=None, batch_atoms=512)
    pre, _ = timed("chgnet", table, pre_settings, args.device)  # the confirmation's starting geometries
    start = table.copy()
    for i in np.flatnonzero(pre.relax_status.isin(["converged", "max_steps"]).to_numpy()):
        for column in ("frac_coords", "lattice"):
            start.at[i, column] = pre.at[i, column]

    rows = []
    for task, settings, cells in (("pre-relaxation (fmax 0.1)", pre_settings, table),
                                  ("confirmation from CHGNet geometry (fmax 0.05)", confirm_settings, start)):
        for name in args.calculators:
            result, seconds = timed(name, cells, settings, args.device)
            rows.append({"task": task, "mlip": name, "structures/s": len(cells) / seconds, "seconds": seconds,
                         "converged": int(result.relax_converged.sum()), "mean steps": result.relax_steps.mean(),
                         "atom-steps/s": float((result.relax_steps * [len(s) for s in cells.species]).sum() / seconds)})
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    frame["vs chgnet"] = frame["structures/s"] / frame.groupby("task")["structures/s"].transform(
        lambda s: s[frame.loc[s.index, "mlip"] == "chgnet"].iloc[0])
    print(frame.to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
