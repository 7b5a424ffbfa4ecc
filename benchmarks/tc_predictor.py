"""Tc predictor held out by composition, over several grouped splits.

Fits the hurdle predictor (``onnes.tc.predictor``) on the curated SuperCon and 3DSC
tables once per split seed, with the campaign's settings (``--settings`` JSON overrides
``tc.predictor``), and prints per split and as mean [min, max]: accuracy / ROC-AUC /
precision / recall of the classifiers, R^2 and MAE of Tc over held-out superconductors,
and the coverage of the conformal intervals. Features are computed once.

    snakemake --cores 2 results/default/data/supercon/curated.parquet \
        results/default/data/3dsc/curated.parquet --config data_mirror=../shared/data
    python benchmarks/tc_predictor.py --supercon results/default/data/supercon/curated.parquet \
        --structures results/default/data/3dsc/curated.parquet [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

from onnes.config import validate  # noqa: E402
from onnes.crystals import read_table  # noqa: E402
from onnes.io import read_parquet  # noqa: E402
from onnes.tc.features import feature_matrix  # noqa: E402
from onnes.tc.predictor import evaluate, training_table  # noqa: E402

FIGURES = {
    "superconducting accuracy": ("classification", "superconducting", "accuracy"),
    "superconducting ROC-AUC": ("classification", "superconducting", "roc_auc"),
    "10 K accuracy (all rows)": ("classification", "above_10K", "accuracy"),
    "10 K ROC-AUC (all rows)": ("classification", "above_10K", "roc_auc"),
    "10 K precision (all rows)": ("classification", "above_10K", "precision"),
    "10 K recall (all rows)": ("classification", "above_10K", "recall"),
    "10 K accuracy (superconductors)": ("classification", "above_10K_superconductors", "accuracy"),
    "R2, Tc of superconductors": ("regression_superconductors", "r2"),
    "MAE (K), Tc of superconductors": ("regression_superconductors", "mae"),
    "R2 log1p, superconductors": ("regression_superconductors", "r2_log1p"),
    "MAE log1p, superconductors": ("regression_superconductors", "mae_log1p"),
    "68 % interval coverage": ("intervals", "68", "coverage"),
    "90 % interval coverage": ("intervals", "90", "coverage"),
    "90 % interval median width (K)": ("intervals", "90", "median_width_K"),
    "mixed rows, expected Tc R2": ("mixed_rows_expected_tc", "r2"),
    "mixed rows, expected Tc MAE (K)": ("mixed_rows_expected_tc", "mae"),
}


def pick(metrics: dict, path: tuple) -> float:
    for key in path:
        metrics = metrics[key]
    return float(metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supercon", type=Path, required=True)
    parser.add_argument("--structures", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--settings", default="{}", help="JSON overriding tc.predictor settings")
    parser.add_argument("--json", type=Path, help="write every split's metrics here")
    args = parser.parse_args()
    settings = {**validate({"tc": {}}, whole=False)["tc"]["predictor"], **json.loads(args.settings)}
    print(hardware())
    print("settings:", json.dumps(settings, sort_keys=True))
    table = training_table(read_parquet(args.supercon), read_table(args.structures) if args.structures else None)
    start = time.perf_counter()
    features = feature_matrix(table)
    print(f"{len(table)} rows, {table.group.nunique()} compositions; features in {time.perf_counter() - start:.0f} s")
    runs = []
    for seed in args.seeds:
        start = time.perf_counter()
        _, metrics = evaluate(table, features, settings, seed)
        runs.append(metrics)
        print(f"split {seed} ({time.perf_counter() - start:.0f} s): " + ", ".join(
            f"{name} {pick(metrics, path):.3f}" for name, path in list(FIGURES.items())[:9]))
    print(f"\n{'figure':36s} {'mean':>8s} {'min':>8s} {'max':>8s}")
    for name, path in FIGURES.items():
        values = np.array([pick(m, path) for m in runs])
        print(f"{name:36s} {values.mean():8.3f} {values.min():8.3f} {values.max():8.3f}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
