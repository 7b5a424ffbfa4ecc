"""Writes ``results/{campaign}/report/``: index.html, its figures, candidate pictures and
CIFs, the funnel and candidate tables as CSV, and the provenance."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from onnes import crystals
from onnes.data.export import export_cif
from onnes.io import atomic_path, write_json
from onnes.report import collect, figures, page, provenance

log = logging.getLogger(__name__)

FIGURES = {"funnel": "figures/funnel.png", "training": "figures/training.png",
           "distributions": "figures/distributions.png", "space_groups": "figures/space_groups.png"}

NOTES = {
    "funnel": "Structures left after each step: generated; valid (structure and composition); unique; novel "
              "against the training data; pre-relaxed by the first MLIP; converged; MSUN (metastable: energy "
              "above the MP hull within the campaign's threshold after a converged relaxation, unique, and "
              "novel against every known crystal on the relaxed geometry); MSUN confirmed by the second MLIP; "
              "with a Tc prediction (ranked); verified by DFT (calculation successful). Empty cells: the "
              "stage is off in this campaign. The MLIPs, thresholds and novelty references are in each "
              "source's funnel.json (protocol).",
    "stability": "SUN (energy above the hull at most 0) and MSUN (at most the campaign's threshold), both "
                 "unique and novel against every known crystal after a converged relaxation: fractions of the "
                 "relaxed novel sample with 95 % Wilson intervals (a capped confirmation: MOVER product "
                 "intervals) and counts, at the pre-relaxation level (first MLIP) and confirmed by the second "
                 "MLIP. Unconverged relaxations are counted apart and never called stable. Protocol below; "
                 "rates per generated structure in each funnel.json.",
    "candidates": "Confirmed candidates (MSUN after both MLIPs) of all sources: in-domain before "
                  "out-of-domain, then by the Tc acquisition (default: P(superconducting) x the lower end of the "
                  "90 % interval; tc.rank.acquisition); the metallicity gate's band insulators and "
                  "compositions superconducting only under pressure are left out. Structures are those of the "
                  "pre-relaxation. OOD: the composition lies outside the predictor's training domain, so the "
                  "prediction is an extrapolation. Why: the gate's P(insulator), the OOD score (above 1: "
                  "further from the training data than 95 % of it is from itself) and the three nearest known "
                  "superconductors with their Tc.",
}


@dataclass
class ReportInputs:
    results: Path
    out_dir: Path
    config: dict
    sources: list[str]
    models: list[str]
    raw_files: list[Path]
    cache: Path
    repo: Path
    tc_reference: Path | None = None
    structure_reference: Path | None = None


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def _distribution_data(inputs: ReportInputs) -> tuple[dict, dict, dict, dict, dict]:
    tc, e_hull, density, n_elements, symbols = {}, {}, {}, {}, {}
    if inputs.tc_reference is not None:
        reference = crystals.read_table(inputs.tc_reference)
        tc["training set (measured)"] = reference.tc_K.to_numpy(dtype=float)
    if inputs.structure_reference is not None:
        reference = crystals.read_table(inputs.structure_reference)
        density["training set"] = collect.densities(reference)
        n_elements["training set"] = collect.element_counts(reference)
    for source in inputs.sources:
        screened = crystals.read_table(inputs.results / f"screen/{source}/screened.parquet")
        valid = screened[screened.valid.astype(bool)]
        relaxed = screened[screened.relaxed.astype(bool)]
        predicted = inputs.results / f"tc/{source}/predicted.parquet"
        if predicted.exists():
            table = crystals.read_table(predicted, columns=["valid", "tc_pred_mean"])
            tc[source] = table.tc_pred_mean[table.valid.astype(bool)].to_numpy(dtype=float)
        e_hull[source] = relaxed.e_above_hull.to_numpy(dtype=float)
        density[source] = collect.densities(valid)
        n_elements[source] = collect.element_counts(valid)
        symbols[source] = collect.space_groups(relaxed)
    return tc, e_hull, density, n_elements, symbols


def _candidate_assets(candidates: pd.DataFrame, out_dir: Path) -> dict[str, dict[str, str]]:
    """A picture and a CIF per candidate under candidates/, named by the (safe) id."""
    assets = {}
    directory = out_dir / "candidates"
    cifs = export_cif(candidates, directory)
    for (_, row), cif in zip(candidates.iterrows(), cifs):
        png = directory / f"{cif.stem}.png"
        figures.structure(crystals.to_atoms(row), png, f"{row.formula} ({row.space_group})")
        assets[row.id] = {"png": f"candidates/{png.name}", "cif": f"candidates/{cif.name}"}
    return assets


def write_report(inputs: ReportInputs) -> Path:
    out = inputs.out_dir
    out.mkdir(parents=True, exist_ok=True)
    dft_path = inputs.results / "dft/dft.parquet"
    dft = crystals.read_table(dft_path) if dft_path.exists() else None

    funnel = collect.funnel_table(inputs.results, inputs.sources, dft)
    _write_csv(funnel, out / "funnel.csv")
    stability, protocol = collect.stability_table(inputs.results, inputs.sources)
    _write_csv(stability, out / "stability.csv")
    figures.funnel(funnel, out / FIGURES["funnel"])
    figures.training(collect.training_curves(inputs.results, inputs.models), out / FIGURES["training"])
    tc, e_hull, density, n_elements, symbols = _distribution_data(inputs)
    figures.distributions(tc, e_hull, density, n_elements, out / FIGURES["distributions"])
    figures.space_groups(symbols, out / FIGURES["space_groups"])

    top = inputs.config["report"]["top_candidates"]
    candidates = collect.candidate_table(inputs.results, inputs.sources, dft, top)
    _write_csv(collect.printable(candidates, collect.CANDIDATE_COLUMNS), out / "candidates.csv")
    assets = _candidate_assets(candidates, out)

    record = {
        "git": provenance.git_state(inputs.repo),
        "versions": provenance.package_versions(),
        "data": provenance.data_checksums(inputs.raw_files, inputs.cache),
        "seeds": provenance.seeds(inputs.config),
        "hardware": provenance.hardware(),
    }
    write_json(out / "provenance.json", record)
    config_yaml = yaml.safe_dump(inputs.config, sort_keys=True)
    _write_text(out / "config.yaml", config_yaml)
    html_text = page.render(inputs.config["campaign"], funnel, candidates, assets, FIGURES, record, config_yaml,
                            NOTES, stability, protocol)
    _write_text(out / "index.html", html_text)
    log.info("report %s: %d sources, %d candidates, commit %s, %d DFT-verified", out / "index.html", len(funnel),
             len(candidates), record["git"]["commit"][:12], int(funnel.dft_verified.sum()))
    return out / "index.html"

