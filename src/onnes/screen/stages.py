"""The screening stages after matching, as the CLI and the rules run them: the table of
every known crystal, the pre-relaxation verdict, the confirming relaxation's input and
the final funnel with its protocol block. Each reads files and settings and writes files;
the science is in :mod:`onnes.screen.funnel`, :mod:`onnes.screen.hull` and
:mod:`onnes.screen.relax`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from pymatgen.core import Composition

from onnes.crystals import REQUIRED_COLUMNS, read_table, write_table
from onnes.io import read_parquet, write_json

log = logging.getLogger(__name__)


def known_structures(tables: dict[str, str | Path]) -> pd.DataFrame:
    """Every structure of the given curated splits (keys ``dataset/split``) in one crystal
    table, ids prefixed with their data set (MP-20 and MPTS-52 share MP ids)."""
    frames = []
    for key, path in tables.items():
        dataset, _, split = key.partition("/")
        table = read_table(path, columns=REQUIRED_COLUMNS)
        frames.append(table.assign(id=dataset + ":" + table.id.astype(str), source=dataset, split=split))
    known = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*REQUIRED_COLUMNS, "split"])
    log.info("known structures: %d (%s)", len(known), known.groupby(["source", "split"]).size().to_dict())
    return known


def hull_formulas(references: str | Path) -> set[str]:
    """Reduced formulas of the hull references (the MP table and curated MPTS-52/WBM)."""
    compositions = read_parquet(references, columns=["composition"]).composition
    return {Composition(json.loads(text)).reduced_formula for text in compositions.unique()}


def stability_stage(matched: Path, relaxed: list[Path], references: Path, elements: Path, train: Path, known: Path,
                    config: dict, out: Path, workers: int = 1) -> pd.DataFrame:
    """Pre-relaxation verdicts of one source (:func:`onnes.screen.funnel.judge_prerelaxed`)."""
    from onnes.screen.funnel import judge_prerelaxed
    from onnes.screen.hull import ConvexHull, evaluate_stability
    from onnes.mlip import mlip_class

    results = pd.concat([read_parquet(p) for p in relaxed], ignore_index=True)
    hull = ConvexHull.from_files(references, elements)
    footing = mlip_class(config["relax"]["calculator"]).footing
    stability = evaluate_stability(results, hull, footing)
    settings = {**config["screen"], "select": config["relax"]["select"]}
    table = judge_prerelaxed(read_table(matched), results, stability, read_table(train), read_table(known),
                             hull_formulas(references), settings, workers)
    write_table(table, out)
    log.info("pre-relaxation: %d relaxed, %d converged, %d MSUN, %d SUN", table.relaxed.sum(),
             table.converged.sum(), table.msun.sum(), table.sun.sum())
    return table


def _mlip(name: str, results: pd.DataFrame | None) -> dict:
    """The MLIP as the relaxation recorded it (package and weights, in its own
    environment), else as this environment describes it."""
    from onnes.mlip import describe_mlip

    described = describe_mlip(name)
    versions = results.mlip_version.dropna().unique() if results is not None and "mlip_version" in results else []
    return {**described, "version": "; ".join(map(str, versions))} if len(versions) else described


def protocol(config: dict, references: Path, train: Path, known: Path, prerelaxed: pd.DataFrame,
             confirmed: pd.DataFrame | None) -> dict:
    """How the stability figures were measured: MLIPs, relaxation settings, hull table,
    novelty references (written beside every SUN/MSUN figure)."""
    relax, confirm, screen = config["relax"], config["confirm"], config["screen"]
    hull_sources = read_parquet(references, columns=["source"]).source.value_counts().to_dict()
    known_sets = read_parquet(known, columns=["source", "split"]).value_counts().sort_index()
    return {
        "pre_relaxation": {**_mlip(relax["calculator"], prerelaxed), "fmax": relax["fmax"],
                           "max_steps": relax["max_steps"], "relax_cell": relax["relax_cell"],
                           "select": relax["select"], "max_structures": relax["max_structures"],
                           "optimizer": "FIRE + FrechetCellFilter"},
        "confirmation": None if confirmed is None else {
            **_mlip(confirm["calculator"], confirmed), "fmax": confirm["fmax"], "max_steps": confirm["max_steps"],
            "max_structures": confirm["max_structures"], "relax_cell": confirm["relax_cell"],
            "optimizer": "FIRE + FrechetCellFilter", "start": "the pre-relaxed geometry",
            "select": "pre-relaxation MSUN rows, in table order"},
        "hull": {"energies": "MP2020-compatible formation energies (raw-footing MLIPs corrected first)",
                 "entries": int(sum(hull_sources.values())), "sources": hull_sources},
        "novelty": {
            "matcher": screen["matcher"],
            "literature": {"reference": "training split", "size": pq.read_metadata(train).num_rows,
                           "geometry": "generated (funnel step novel); relaxed (novel_relaxed)"},
            "strict": {"reference": "every split of every curated data set",
                       "size": int(known_sets.sum()),
                       "sets": {f"{d}/{s}": int(n) for (d, s), n in known_sets.items()},
                       "geometry": "relaxed"},
            "headline": "strict",
        },
        "thresholds": {"sun": 0.0, "msun": screen["stable_threshold"]},
        "stable_requires": "a converged relaxation (fmax reached within max_steps)",
        "denominator": "fractions: of the relaxed novel sample; rates: per generated structure "
                       "(fraction x novelty rate)",
    }


def finish_stage(stability: Path, references: Path, elements: Path, train: Path, known: Path, config: dict,
                 out: Path, funnel_path: Path, confirmed: Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The screened table and funnel.json of one source (:func:`onnes.screen.funnel.finish`)."""
    from onnes.mlip import mlip_class
    from onnes.screen.funnel import finish
    from onnes.screen.hull import ConvexHull, evaluate_stability

    settings = {**config["screen"], "select": config["relax"]["select"]}
    results = confirm_stability = None
    if confirmed is not None:
        results = read_parquet(confirmed)
        hull = ConvexHull.from_files(references, elements)
        confirm_stability = evaluate_stability(results, hull, mlip_class(config["confirm"]["calculator"]).footing)
    prerelaxed = read_table(stability)
    table, funnel = finish(prerelaxed, settings, results, confirm_stability,
                           protocol(config, references, train, known, prerelaxed, results))
    write_table(table, out)
    write_json(funnel_path, funnel)
    log.info("funnel: %s", funnel["steps"])
    return table, funnel
