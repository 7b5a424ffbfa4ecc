"""A finished campaign's candidates, re-predicted and re-ranked by another Tc predictor.

Reads each source's ``screen/{source}/screened.parquet`` and the campaign's own
``tc/{source}/ranked.parquet`` (before), predicts and ranks the screened tables with the
predictor in ``--predictor`` and the ranking settings of ``--settings`` (after), and
prints the pooled top ``--top`` both ways (formula, source, E_hull, expected Tc,
P(superconducting), the gate's P(insulator), OOD), how many of each list the gate calls
band insulators, how many are out of domain above an in-domain row, and the steering
table's headline gains recomputed with the new predictions.

    onnes tc train --supercon results/demo/data/supercon/curated.parquet \\
        --structures results/demo/data/3dsc/curated.parquet \\
        --dft resources/data/hull_refs/mp20_formation_energies.parquet \\
        --out-dir /tmp/new-predictor --settings '{"seed": 0, "tc": {"predictor": {"ensemble": 3,
        "trees": 300, "learning_rate": 0.06, "negatives": {"max_compositions": 2000},
        "gate": {"max_compositions": 4000}}}}'
    python benchmarks/tc_rerank.py --results results/demo --predictor /tmp/new-predictor \\
        --pairs flow-tc-cfg=flow-tc-uncond flow-tc-reward=flow-tc-uncond

To see what an older recipe would have ranked, pass its predictor and ranking settings and
let the campaign's own predictor judge both lists (``--judge results/demo/tc/predictor``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from onnes.config import deep_merge, validate
from onnes.crystals import read_table
from onnes.tc.physics import high_pressure_mask
from onnes.tc.predictor import TcPredictor, in_domain
from onnes.tc.ranking import predict_candidates, rank, sort_candidates
from onnes.tc.steering import compare

SHOWN = ["source", "formula", "e_above_hull", "tc_pred_mean", "tc_p_superconducting", "tc_p_insulator",
         "tc_ood_score", "tc_tier"]


def describe(name: str, pooled: pd.DataFrame, judge: TcPredictor, top: int) -> None:
    head = sort_candidates(pooled, ["source", "id"]).head(top).reset_index(drop=True)
    # One predictor's gate and OOD score judge both lists, so that they are judged alike.
    verdict = judge.predict(head)
    head["tc_p_insulator"] = verdict.tc_p_insulator.to_numpy()
    head["tc_ood_score"] = verdict.tc_ood_score.to_numpy()
    ood = ~in_domain(head).to_numpy()
    ood_above = int(sum(ood[i] and (~ood[i + 1:]).any() for i in range(len(head))))
    pressure = high_pressure_mask(head["formula"])
    print(f"\n== {name}: top {len(head)}; gate calls band insulators: {int((head.tc_p_insulator > 0.5).sum())}; "
          f"out-of-domain rows ranked above an in-domain one: {ood_above}; "
          f"high-pressure-only compositions: {int(pressure.sum())} {sorted(set(head.formula[pressure]))}")
    print(head[[c for c in SHOWN if c in head]].round(3).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="a finished campaign's results/<campaign>")
    parser.add_argument("--predictor", type=Path, required=True)
    parser.add_argument("--settings", default="{}", help="JSON overriding tc.rank")
    parser.add_argument("--pairs", nargs="*", default=[], help="steered=baseline pairs of the steering table")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--judge", type=Path, help="predictor whose gate and OOD score judge both lists "
                        "(default: --predictor); e.g. the campaign's own when --predictor is an older recipe")
    args = parser.parse_args()
    settings = deep_merge(validate({"tc": {}}, whole=False)["tc"]["rank"], json.loads(args.settings))
    predictor = TcPredictor.load(args.predictor)
    judge = TcPredictor.load(args.judge) if args.judge else predictor
    sources = sorted(p.parent.name for p in (args.results / "tc").glob("*/ranked.parquet"))
    before, after, predicted = [], [], {}
    for source in sources:
        old = read_table(args.results / f"tc/{source}/ranked.parquet")
        before.append(old.assign(source=source, tc_tier=0))
        predicted[source] = predict_candidates(read_table(args.results / f"screen/{source}/screened.parquet"), predictor)
        after.append(rank(predicted[source], settings).assign(source=source))
    print(f"campaign {args.results}; sources: {', '.join(sources)}; ranking: {json.dumps(settings)}")
    describe("the campaign's own ranking", pd.concat(before, ignore_index=True), judge, args.top)
    describe(f"re-ranked by {args.predictor}", pd.concat(after, ignore_index=True), judge, args.top)
    pairs = dict(item.split("=", 1) for item in args.pairs)
    if pairs:
        thresholds = validate({"tc": {}}, whole=False)["tc"]["steering"]["thresholds"]
        table = compare(predicted, None, thresholds, pairs).set_index("source")
        columns = [c for c in table.columns if c.startswith("gain_")]
        print(f"\nsteering gains with {args.predictor}'s predictions (ratio [95 % interval]):")
        print(table.loc[list(pairs), columns].round(3).T.to_string())


if __name__ == "__main__":
    main()
