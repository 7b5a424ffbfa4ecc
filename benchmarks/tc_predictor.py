"""Tc predictor held out by composition, over several grouped splits.

Fits the hurdle predictor (``onnes.tc.predictor``) on the curated SuperCon and 3DSC
tables (and, with ``--dft``, the MP table's band insulators and the metallicity gate)
once per split seed and variant, with the campaign's settings (``--settings`` JSON
overrides ``tc.predictor``; each ``--variant NAME=JSON`` is merged on top), and prints
per split and as mean [min, max]: accuracy / ROC-AUC / precision / recall of the
classifiers, R^2 and MAE of Tc over held-out superconductors, the coverage of the
conformal intervals, the false-positive rates on held-out known non-superconductors, and
what the gate does to held-out superconductors. Then, for each variant fitted on all
rows, the predictions for well-known non-superconductors. Features are computed once.

    snakemake --cores 2 results/default/data/supercon/curated.parquet \
        results/default/data/3dsc/curated.parquet --config data_mirror=../shared/data
    python benchmarks/tc_predictor.py --supercon results/default/data/supercon/curated.parquet \
        --structures results/default/data/3dsc/curated.parquet [--seeds 0 1 2 3 4] \
        --dft ../shared/data/hull_refs/mp20_formation_energies.parquet \
        --variant 'records={"pressure":"all","negatives":{"enabled":false},"gate":{"enabled":false}}' \
        --variant 'default={}' --variant 'multiply={"gate":{"use":"multiply"}}'
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

import pandas as pd  # noqa: E402

from onnes.config import deep_merge, validate  # noqa: E402
from onnes.crystals import read_table  # noqa: E402
from onnes.io import read_parquet  # noqa: E402
from onnes.tc.features import composition_features, feature_matrix  # noqa: E402
from onnes.tc.physics import metallicity_table  # noqa: E402
from onnes.tc.predictor import TcPredictor, evaluate, training_table  # noqa: E402

# Known non-superconductors at ambient pressure (band insulators, a semiconductor, a
# ferromagnet, elemental sulfur) and three superconductors to keep in view.
PROBES = ["LiF", "NaF", "LiI", "CsI", "KCl", "MgO", "GaN", "ZnO", "Al2O3", "SiO2", "Fe", "S", "Si",
          "NbN", "MgB2", "YBa2Cu3O7"]

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
    "DFT insulators: P(SC) > 0.5": ("negatives_held_out", "dft_band_insulators", "p_superconducting_above_0.5"),
    "DFT insulators: Tc > 10 K": ("negatives_held_out", "dft_band_insulators", "expected_tc_above_10K"),
    "measured 0 K: P(SC) > 0.5": ("negatives_held_out", "measured_non_superconductors", "p_superconducting_above_0.5"),
    "measured 0 K: Tc > 10 K": ("negatives_held_out", "measured_non_superconductors", "expected_tc_above_10K"),
    "gate: DFT insulators caught": ("gate", "held_out_dft_insulators_caught"),
    "gate: DFT metals passed": ("gate", "held_out_dft_metals_passed"),
    "gate: superconductors called ins.": ("gate", "held_out_superconductors_called_insulator", "all", "called_insulator"),
    "gate: cuprates called ins.": ("gate", "held_out_superconductors_called_insulator", "cuprate", "called_insulator"),
    "gate: iron-based called ins.": ("gate", "held_out_superconductors_called_insulator", "iron-based",
                                     "called_insulator"),
}


def pick(metrics: dict, path: tuple) -> float:
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics or metrics[key] is None:
            return float("nan")
        metrics = metrics[key]
    return float(metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supercon", type=Path, required=True)
    parser.add_argument("--structures", type=Path)
    parser.add_argument("--dft", type=Path, help="MP DFT table with band gaps (negatives, gate)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--settings", default="{}", help="JSON overriding tc.predictor settings")
    parser.add_argument("--variant", action="append", default=[], help="NAME=JSON merged on top (repeatable)")
    parser.add_argument("--json", type=Path, help="write every split's metrics here")
    args = parser.parse_args()
    base = deep_merge(validate({"tc": {}}, whole=False)["tc"]["predictor"], json.loads(args.settings))
    variants = dict((text.partition("=")[0], json.loads(text.partition("=")[2] or "{}")) for text in args.variant)
    variants = variants or {"settings": {}}
    print(hardware())
    print("settings:", json.dumps(base, sort_keys=True))
    supercon = read_parquet(args.supercon)
    structures = read_table(args.structures) if args.structures else None
    dft = read_parquet(args.dft) if args.dft else None
    cache: dict = {}
    start = time.perf_counter()
    gate_table = metallicity_table(dft, base["gate"]["band_gap_min"]) if dft is not None else None
    gate_features = composition_features(gate_table.formula, cache) if gate_table is not None else None
    print(f"gate table: {0 if gate_table is None else len(gate_table)} compositions, "
          f"features in {time.perf_counter() - start:.0f} s")
    probes = pd.DataFrame({"id": PROBES, "formula": PROBES})
    runs, probe_rows = {}, []
    for name, override in variants.items():
        settings = deep_merge(json.loads(json.dumps(base)), override)
        table = training_table(supercon, structures, dft, settings["negatives"], settings["pressure"] == "ambient")
        features = feature_matrix(table, cache=cache)
        gate = (gate_table, gate_features) if gate_table is not None and settings["gate"]["enabled"] else (None, None)
        print(f"\n== {name}: {json.dumps(override)}; {len(table)} rows, {table.group.nunique()} compositions, "
              f"{int((table.source == 'dft_insulator').sum())} DFT negatives, "
              f"{table.attrs.get('high_pressure_dropped', 0)} high-pressure records left out")
        runs[name] = []
        for seed in args.seeds:
            start = time.perf_counter()
            predictor, metrics, _ = evaluate(table, features, settings, seed, *gate)
            runs[name].append(metrics)
            print(f"split {seed} ({time.perf_counter() - start:.0f} s): " + ", ".join(
                f"{figure} {pick(metrics, path):.3f}" for figure, path in list(FIGURES.items())[:9]))
        # The probes with the last split's predictor (none of them is held out by design:
        # a probe in the training rows is learned, which is what a user gets too).
        predicted = TcPredictor.predict(predictor, probes)
        for formula, (_, row) in zip(PROBES, predicted.iterrows()):
            probe_rows.append({"variant": name, "formula": formula, "P(SC)": row.tc_p_superconducting,
                               "expected Tc": row.tc_pred_mean, "P(insulator)": row.tc_p_insulator,
                               "OOD": row.tc_ood_score})
    print(f"\n{'figure':36s} " + " ".join(f"{name:>22s}" for name in runs))
    for figure, path in FIGURES.items():
        cells = []
        for name in runs:
            values = np.array([pick(m, path) for m in runs[name]])
            cells.append(f"{values.mean():6.3f} [{values.min():.3f},{values.max():.3f}]")
        print(f"{figure:36s} " + " ".join(f"{c:>22s}" for c in cells))
    print("\nwell-known compounds (predictor of the last split):")
    print(pd.DataFrame(probe_rows).pivot(index="formula", columns="variant").round(3).reindex(PROBES).to_string())
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
