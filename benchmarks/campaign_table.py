"""The generative-quality table of a finished campaign (e.g. the quality preset), as the
docs/results/screening.md prints it: literature metrics, funnel counts and the S.U.N. estimate with its 95 %
Wilson interval per source, and the wall time of each stage from the benchmark files.

    python benchmarks/campaign_table.py results/quality
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

from onnes.screen.funnel import wilson_interval  # noqa: E402


def percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def source_row(name: str, screen: Path) -> str:
    funnel = json.loads((screen / name / "funnel.json").read_text())
    metrics = json.loads((screen / name / "metrics.json").read_text())
    steps, generated = funnel["steps"], funnel["steps"]["generated"]
    stability = funnel["stability"]
    # With relax.select: novel, every relaxed structure is novel: the sample the S.U.N.
    # estimate (novelty rate x the sample's S.U.N. fraction) rests on.
    relaxed, sun = steps["relaxed"], steps["sun"]
    novel_rate = steps["novel"] / generated
    low, high = (novel_rate * b for b in wilson_interval(sun, relaxed))
    estimate = novel_rate * sun / relaxed if relaxed else 0.0
    cells = [
        name, percent(funnel["valid_struct"] / generated), percent(funnel["valid_comp"] / generated),
        percent(steps["valid"] / generated), f"{metrics['cov_recall']:.3f} / {metrics['cov_precision']:.3f}",
        f"{metrics['wdist_density']:.3f}", f"{metrics['wdist_num_elements']:.3f}",
        f"{steps['novel']:,}", f"{relaxed}", f"{sun}",
        f"{percent(estimate)} ({100 * low:.1f}–{100 * high:.1f})",
        f"{stability['median_e_above_hull']:.2f}",
        f"{100 * metrics['csp_match_rate']:.0f} %" if metrics.get("csp_match_rate") is not None else "–",
    ]
    return "| " + " | ".join(cells) + " |"


def stage_seconds(benchmarks: Path) -> dict[str, float]:
    """Summed job seconds per stage folder (train, sample, screen, ...)."""
    totals: dict[str, float] = defaultdict(float)
    for path in sorted(benchmarks.glob("*/*.tsv")):
        with path.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        totals[path.parent.name] += float(rows[-1]["s"])
    return dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="results/{campaign}")
    args = parser.parse_args()
    screen = args.results / "screen"
    with (screen / "summary.csv").open() as handle:
        names = [row["source"] for row in csv.DictReader(handle)]
    print(hardware())
    print("| source | struct. valid | comp. valid | valid | COV-R / COV-P | W(density) | W(#elements) | novel | "
          "relaxed | S.U.N. | S.U.N. rate est. (95 % CI) | median e_hull (eV/atom) | CSP match |")
    print("|---|" + "---:|" * 12)
    for name in names:
        print(source_row(name, screen))
    print()
    for stage, seconds in stage_seconds(args.results / "benchmarks").items():
        print(f"{stage}: {seconds / 60:.1f} job-minutes")


if __name__ == "__main__":
    main()
