"""The rounds table: where each round of a looping model went, beside round 0.

Per round and looping model: the confirmed MSUN and SUN shares of the relaxed novel sample
(as funnel.json counts them; Wilson intervals), uniqueness of the valid samples, the
distinct compositions and space groups among confirmed MSUN rows (does a round collapse
onto a few prototypes?), the share of confirmed rows the Tc predictor puts above 10 K
with P > 0.5, and what the round's hull and known set gained from earlier rounds' DFT.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from onnes import crystals
from onnes.graph import CampaignGraph
from onnes.matching import reduced_formulas
from onnes.report.collect import space_groups
from onnes.report.measured import _rate
from onnes.rounds import round_name
from onnes.tc.steering import ratio_interval

ABOVE = "tc_p_above_10K"


def _share_above(predicted: Path) -> tuple[int | None, int | None]:
    """(confirmed rows with P(Tc > 10 K) > 0.5, confirmed rows with a prediction)."""
    if not predicted.exists():
        return None, None
    table = crystals.read_table(predicted)
    if ABOVE not in table or "msun_confirmed" not in table:
        return None, None
    confirmed = table[table.msun_confirmed.astype(bool) & table[ABOVE].notna()]
    return int((confirmed[ABOVE] > 0.5).sum()), int(len(confirmed))


def _gain(now: tuple[int, int], before: tuple[int, int]) -> str | None:
    """'1.52x [0.98-2.36]': the ratio of two shares with its Katz 95 % interval."""
    if not now[1] or not before[1] or not (now[0] or before[0]):  # no event in either: no ratio
        return None
    ratio, low, high = ratio_interval(now[0], now[1], before[0], before[1])
    return f"{ratio:.2f}x [{low:.2f}-{high:.2f}]"


def round_rows(results: Path, config: dict) -> pd.DataFrame:
    """One row per (looping model, round) that has been screened; empty without a loop."""
    graph = CampaignGraph(config)
    loop = config["loop"]
    rows = []
    for model in loop["models"] if loop["rounds"] > 1 else []:
        first = None  # round 0's counts, which every later round is compared with
        for k in range(loop["rounds"]):
            source = round_name(model, k)
            funnel_path = results / f"screen/{source}/funnel.json"
            if not funnel_path.exists():
                continue
            funnel = json.loads(funnel_path.read_text())
            steps, stability = funnel["steps"], funnel["stability"]
            relaxed_novel = stability["relaxed_novel"]
            screened = crystals.read_table(results / f"screen/{source}/screened.parquet")
            confirmed = screened[screened.msun_confirmed.astype(bool)]
            above, predicted = _share_above(results / f"tc/{source}/predicted.parquet")
            feedback_path = results / f"screen/rounds/{k}/feedback.json"
            feedback = json.loads(feedback_path.read_text()) if feedback_path.exists() else {}
            counts = {"msun": (stability["confirmed"]["msun"]["count"], relaxed_novel),
                      "above": (above or 0, predicted or 0), "unique": (steps["unique"], steps["valid"])}
            first = first or counts
            rows.append({
                "model": model, "round": k, "source": source,
                "learned from": graph.reward_samples(source) if k else "its data set",
                "generated": steps["generated"],
                "unique of valid": _rate(steps["unique"], steps["valid"]),
                "confirmed MSUN": _rate(stability["confirmed"]["msun"]["count"], relaxed_novel),
                "confirmed SUN": _rate(stability["confirmed"]["sun"]["count"], relaxed_novel),
                "compositions (confirmed)": int(reduced_formulas(confirmed).nunique()) if len(confirmed) else 0,
                "space groups (confirmed)": len(set(space_groups(confirmed))) if len(confirmed) else 0,
                "confirmed above 10 K": _rate(above, predicted) if predicted else None,
                "MSUN vs round 0": _gain(counts["msun"], first["msun"]) if k else None,
                "above 10 K vs round 0": _gain(counts["above"], first["above"]) if k else None,
                "uniqueness vs round 0": _gain(counts["unique"], first["unique"]) if k else None,
                "DFT phases known": feedback.get("known_added"),
                "DFT phases on hull": feedback.get("hull_entries_added"),
            })
    return pd.DataFrame(rows)
