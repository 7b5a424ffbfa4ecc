"""A combined data set: the union of curated structure sets, one row per distinct crystal.

Pretraining on all general crystals (MP-20, MPTS-52, WBM) needs one table a model trains
on and judges novelty against. The members are curated (and de-duplicated) on their own
first; the union then drops, with a reason naming the earlier row, every row whose id an
earlier member already holds (MP-20 and MPTS-52 share Materials Project ids) and every
StructureMatcher duplicate of an earlier row across members (``data.dedup``). Members
are taken in the order the config lists them, so the first keeps a shared crystal, its
labels and its ``source``; a ``member`` column names the member set each row came from.
The result is split like any curated set (``onnes data split``),
so no crystal can sit in the union's train split and in its test split at once.
"""

from __future__ import annotations

import time

import pandas as pd

from onnes.data.curate import DROP_COLUMNS, Curated, deduplicate, report_counts


def combine(name: str, members: dict[str, pd.DataFrame], dedup: dict, max_atoms: int | None = None,
            workers: int = 1) -> Curated:
    """Union of ``members`` (member name -> curated table), in their order; cells with more
    than ``max_atoms`` sites (when given) are dropped with a reason."""
    started = time.perf_counter()
    union = pd.concat([table.assign(member=member) for member, table in members.items()], ignore_index=True)
    records_in = len(union)

    repeated = union["id"].duplicated(keep="first")
    first_member = union.drop_duplicates("id").set_index("id")["member"]
    dropped_rows = _drops(union[repeated], "duplicate",
                          [f"same id as a row of {m}" for m in first_member[union.loc[repeated, "id"]]])
    kept = union[~repeated].reset_index(drop=True)
    if max_atoms is not None:
        sites = kept["species"].map(len)
        too_large = sites > max_atoms
        dropped_rows += _drops(kept[too_large], "too_many_atoms",
                               [f"{n} sites > max_atoms {max_atoms}" for n in sites[too_large]])
        kept = kept[~too_large].reset_index(drop=True)
    if dedup["enabled"] and len(kept):
        kept, duplicates = deduplicate(kept, dedup, workers)
        dropped_rows += duplicates

    dropped = pd.DataFrame(dropped_rows, columns=DROP_COLUMNS)
    report = report_counts(name, records_in, kept, dropped, workers)
    report["combined_from"] = {member: len(table) for member, table in members.items()}
    report["kept_by_member"] = {member: int((kept["member"] == member).sum()) for member in members}
    report["timing_s"] = {"total": round(time.perf_counter() - started, 2)}
    report["settings"] = {"datasets": list(members), "max_atoms": max_atoms, "dedup": dedup}
    return Curated(kept, dropped, report)


def _drops(rows: pd.DataFrame, reason: str, details: list[str]) -> list[dict]:
    """Drop records (curation's columns) for ``rows``, one detail each."""
    return [{"id": i, "source": source, "drop_reason": reason, "drop_detail": detail}
            for i, source, detail in zip(rows["id"], rows["source"], details)]
