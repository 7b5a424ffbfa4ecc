"""Curation of one data set: raw records -> crystal table + counted drops + report.

Steps: read records; drop repeated ids; parse and check every record in parallel
(``parse.parse_record``); attach labels (Tc for 3DSC); remove StructureMatcher
duplicates within each reduced formula. Every record ends either in the kept table or
in the dropped table with a ``drop_reason``: records_in == kept + dropped, always.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from onnes.config import allowed_elements
from onnes.data import labels
from onnes.matching import Tolerances, find_duplicates
from onnes.data.parse import Checks, parse_record
from onnes.data.readers import iter_records
from onnes.catalogue import DATASET_FILES, STRUCTURE_DATASETS

log = logging.getLogger(__name__)
DROP_COLUMNS = ["id", "source", "drop_reason", "drop_detail"]
# Below this many records, worker start-up costs more than parsing in-process.
MIN_RECORDS_FOR_POOL = 200


@dataclass
class Curated:
    kept: pd.DataFrame
    dropped: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


def parse_all(records: list[dict], checks: Checks, workers: int) -> list[dict]:
    work = partial(parse_record, checks=checks)
    progress = dict(total=len(records), desc="parse", unit="struct", mininterval=5, disable=None)
    if workers > 1 and len(records) > MIN_RECORDS_FOR_POOL:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(tqdm(pool.map(work, records, chunksize=64), **progress))
    return [work(r) for r in tqdm(records, **progress)]


def drop_repeated_ids(records: list[dict]) -> tuple[list[dict], list[dict]]:
    seen: set[str] = set()
    unique, repeated = [], []
    for record in records:
        if record["id"] in seen:
            repeated.append(
                {"id": record["id"], "source": record["source"], **record.get("extra", {}),
                 "drop_reason": "duplicate", "drop_detail": "same id as an earlier record"}
            )
        else:
            seen.add(record["id"])
            unique.append(record)
    return unique, repeated


def deduplicate(kept: pd.DataFrame, dedup: dict, workers: int = 1) -> tuple[pd.DataFrame, list[dict]]:
    """Drop StructureMatcher duplicates within each reduced formula (first one stays)."""
    tol = Tolerances(dedup["ltol"], dedup["stol"], dedup["angle_tol"])
    duplicates = find_duplicates(kept, tol, workers)
    is_dup = kept["id"].isin(duplicates.keys())
    carried = [c for c in ("id", "source", "file") if c in kept.columns]
    dropped = [
        {**row, "drop_reason": "duplicate", "drop_detail": f"StructureMatcher-equivalent to {duplicates[row['id']]}"}
        for row in kept.loc[is_dup, carried].to_dict("records")
    ]
    return kept[~is_dup].reset_index(drop=True), dropped


def curate_structures(dataset: str, cache: str | Path, data_config: dict, workers: int = 1) -> Curated:
    if dataset not in STRUCTURE_DATASETS:
        raise ValueError(f"'{dataset}' is not a structure data set: {STRUCTURE_DATASETS}")
    settings = data_config["per_dataset"][dataset]
    checks = Checks(
        allowed_elements=allowed_elements(data_config),
        max_atoms=settings["max_atoms"],
        min_distance=data_config["min_distance"],
        min_volume=data_config["min_volume"],
        max_volume_per_atom=data_config["max_volume_per_atom"],
    )
    started = time.perf_counter()
    records = list(iter_records(dataset, cache, settings["max_records"]))
    records_in = len(records)
    records, dropped_rows = drop_repeated_ids(records)

    parsed = parse_all(records, checks, workers)
    t_parsed = time.perf_counter()
    kept = pd.DataFrame([row for row in parsed if "drop_reason" not in row])
    dropped_rows += [row for row in parsed if "drop_reason" in row]

    if dataset == "3dsc" and len(kept):
        tc_file, supercon_file = (Path(cache) / p for p in DATASET_FILES["3dsc"][1:])
        kept = labels.attach_tc(kept, labels.read_3dsc_tc_table(tc_file), labels.read_supercon(supercon_file))

    dedup = data_config["dedup"]
    if dedup["enabled"] and len(kept):
        kept, duplicates = deduplicate(kept, dedup, workers)
        dropped_rows += duplicates
    t_dedup = time.perf_counter()

    dropped = pd.DataFrame(dropped_rows, columns=DROP_COLUMNS)
    report = report_counts(dataset, records_in, kept, dropped, workers)
    report["timing_s"] = {
        "parse": round(t_parsed - started, 2),
        "dedup": round(t_dedup - t_parsed, 2),
        "total": round(time.perf_counter() - started, 2),
    }
    report["settings"] = {**settings, "min_distance": checks.min_distance, "min_volume": checks.min_volume,
                          "dedup": dedup}
    if dataset == "3dsc":
        report["tc"] = labels.tc_summary(kept["tc_K"]) if len(kept) else labels.tc_summary(pd.Series([], dtype=float))
        if len(kept):
            report["tc"]["by_source"] = kept["tc_source"].fillna("none").value_counts().to_dict()
    return Curated(kept, dropped, report)


def curate_compositions(dataset: str, cache: str | Path, data_config: dict) -> Curated:
    settings = data_config["per_dataset"][dataset]
    started = time.perf_counter()
    kept, dropped = labels.curate_supercon(
        labels.supercon_path(cache), allowed_elements(data_config), settings["max_records"]
    )
    records_in = len(kept) + len(dropped)
    report = report_counts(dataset, records_in, kept, dropped, workers=1)
    report["timing_s"] = {"total": round(time.perf_counter() - started, 2)}
    report["settings"] = settings
    report["tc"] = labels.tc_summary(kept["tc_K"])
    return Curated(kept, dropped, report)


def curate(dataset: str, cache: str | Path, data_config: dict, workers: int = 1) -> Curated:
    if dataset in STRUCTURE_DATASETS:
        return curate_structures(dataset, cache, data_config, workers)
    return curate_compositions(dataset, cache, data_config)


def report_counts(dataset: str, records_in: int, kept: pd.DataFrame, dropped: pd.DataFrame, workers: int) -> dict:
    by_reason = dropped["drop_reason"].value_counts().sort_index().to_dict() if len(dropped) else {}
    report = {
        "dataset": dataset,
        "records_in": records_in,
        "kept": len(kept),
        "dropped_total": len(dropped),
        "dropped": {k: int(v) for k, v in by_reason.items()},
        "workers": workers,
    }
    if records_in != len(kept) + len(dropped):
        raise AssertionError(f"{dataset}: {records_in} records in, {len(kept)} kept + {len(dropped)} dropped")
    labelled = [c for c in ("e_form_per_atom", "e_above_hull", "tc_K") if c in kept]
    report["labelled"] = {c: int(kept[c].notna().sum()) for c in labelled}
    return report


def summarize(reports: list[dict]) -> dict:
    """The campaign's curation.json: per data set and in total. Combined data sets
    (``combined_from``) are listed but left out of the totals: their rows are their
    members' rows again."""
    by_dataset = {r["dataset"]: r for r in reports}
    reports = [r for r in reports if "combined_from" not in r]
    totals: dict[str, int] = {}
    for r in reports:
        for reason, count in r["dropped"].items():
            totals[reason] = totals.get(reason, 0) + count
    return {
        "datasets": by_dataset,
        "total": {
            "records_in": sum(r["records_in"] for r in reports),
            "kept": sum(r["kept"] for r in reports),
            "dropped": dict(sorted(totals.items())),
            "wall_time_s": round(sum(r["timing_s"]["total"] for r in reports), 2),
        },
    }
