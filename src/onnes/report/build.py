"""Writes ``results/{campaign}/report/``: index.html, its figures (PNG and SVG), candidate
pictures, hull plots and CIFs (as relaxed and symmetrised), every table as CSV, and the
provenance. The workflow passes every file it reads (``ReportInputs``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from onnes import crystals
from onnes.data.export import export_cif
from onnes.io import atomic_path, write_json
from onnes.data.export import SYMPREC
from onnes.report import chemical_map, collect, figures, hull, measured, page, provenance, rounds

log = logging.getLogger(__name__)

FIGURES = {"funnel": "figures/funnel.png", "training": "figures/training.png",
           "distributions": "figures/distributions.png", "space_groups": "figures/space_groups.png",
           "predictor": "figures/tc_predictor.png", "map": "figures/map.png"}

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
                  "superconductors with their Tc. Space groups at two tolerances (spglib through pymatgen: "
                  "0.01 Å, and 0.1 Å, which a loose relaxation needs); the symmetrised CIF is the structure "
                  "refined at 0.1 Å. Hull: energy above the campaign's hull by the pre-relaxing and the "
                  "confirming MLIP, what the candidate would decompose into, and for two-element candidates "
                  "the hull of its system with the candidate at its pre-relaxation formation energy.",
    "quality": "Generation quality as the literature defines it (CDVAE, DiffCSP): structural validity (all "
               "distances above 0.5 Å, volume above 0.1 Å³), compositional validity (SMACT charge "
               "balance), COV-R/P (CrystalNN structure and Magpie composition fingerprints against the test "
               "split, MP-20 cutoffs 0.4 and 10), "
               "Wasserstein distances of density and number of elements to the test split, CSP match rate "
               "and RMSE (StructureMatcher on test compositions). Rates per generated structure with 95 % "
               "Wilson intervals and counts; models and baselines in one table; SUN and MSUN in the stability "
               "table below.",
    "steering": "Did steering raise Tc? Among the valid, novel samples inside the Tc predictor's domain, the "
                "share with P(Tc > 10 K) > 0.5, against the unguided source named in 'against' (gain with its "
                "Katz 95 % interval), and the same share among MSUN and confirmed MSUN rows (per relaxed "
                "novel structure). The training set row is the measured reference.",
    "predictor": "The Tc predictor scored on compositions it never saw (grouped split by reduced formula): "
                 "the regressor of Tc among superconductors, the classifiers, the conformal intervals' "
                 "coverage, and how often it calls held-out non-superconductors superconducting. The "
                 "'expected Tc' of the candidates is worth what these figures say.",
    "rounds": "Each round of a looping model (loop.rounds) is a fine-tune of the round before on that round's "
              "screened samples (loop.reward: what a sample earns, and the share of known crystals mixed in), "
              "judged on a hull and a known set that hold every phase DFT computed in earlier rounds. Per "
              "round: the confirmed MSUN and SUN shares of the relaxed novel sample and the uniqueness of the "
              "valid samples (95 % Wilson intervals, counts), distinct compositions and space groups (0.1 Å) "
              "among confirmed MSUN rows (a round collapsing onto a few prototypes shows here), the share of "
              "confirmed rows with P(Tc > 10 K) > 0.5, and the DFT phases the round's references gained.",
    "map": "Where each source samples in composition space, beside known crystals: every crystal placed by "
           "its composition's Magpie element-property features (the COV composition fingerprint, scaled "
           "with CDVAE's MP-20 statistics), embedded in two dimensions by t-SNE (scikit-learn, PCA start, "
           "the campaign's seed). Near means chemically alike; t-SNE keeps neighbourhoods, not distances "
           "between far clusters. Known: a seeded subsample of the structure reference's training split; "
           "samples: each source's first valid ones (report.map). map.csv names every point.",
    "dft": "The candidates DFT ran on, verified ones first: code, calculation, outcome and energy. The "
           "settings are in config.yaml (dft block); each run's files and job store are under "
           "dft/{source}/{id}/.",
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
    summary: Path | None = None  # screen/summary.csv
    steering: Path | None = None  # tc/steering.csv
    predictor_metrics: Path | None = None  # tc/predictor/metrics.json
    held_out: Path | None = None  # tc/predictor/held_out.csv
    dft: Path | None = None  # dft/dft.parquet
    hull_references: Path | None = None  # screen/hull_references.parquet


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


def _candidate_assets(candidates: pd.DataFrame, out_dir: Path,
                      references: hull.HullReferences | None) -> dict[str, dict[str, str]]:
    """Per candidate under candidates/, named by the (safe) id: a picture, the CIF as
    relaxed, the symmetrised CIF, and for a two-element candidate its hull plot."""
    assets = {}
    directory = out_dir / "candidates"
    cifs = export_cif(candidates, directory)
    symmetrised = export_cif(candidates, directory / "symmetrised", SYMPREC)
    for (_, row), cif, sym in zip(candidates.iterrows(), cifs, symmetrised):
        png = directory / f"{cif.stem}.png"
        figures.structure(crystals.to_atoms(row), png, f"{row.formula} ({row.space_group})")
        assets[row.id] = {"png": f"candidates/{png.name}", "cif": f"candidates/{cif.name}",
                          "cif_symmetrised": f"candidates/symmetrised/{sym.name}"}
        elements = hull.binary_elements(row.formula)
        if references is not None and elements is not None and pd.notna(row.get("e_form_per_atom")):
            from pymatgen.core import Composition

            plot = directory / f"{cif.stem}_hull.png"
            x = Composition(row.formula).get_atomic_fraction(elements[1])
            figures.binary_hull(references.binary(elements), elements, (x, float(row.e_form_per_atom)),
                                row.formula, plot)
            assets[row.id]["hull"] = f"candidates/{plot.name}"
    return assets


def _chemical_map(inputs: ReportInputs, out: Path) -> bool:
    """map.csv and figures/map.png (report.map); whether they were drawn."""
    from onnes.graph import CampaignGraph

    settings = inputs.config["report"]["map"]
    if not settings["enabled"] or inputs.structure_reference is None:
        return False
    graph = CampaignGraph(inputs.config)
    rounds = {source: graph.round_of(source) for source in inputs.sources}
    reference = crystals.read_table(inputs.structure_reference)
    points = chemical_map.map_points(inputs.results, inputs.sources, rounds, reference, settings["known"],
                                     settings["per_source"], inputs.config["seed"])
    points = chemical_map.embed(points, inputs.config["seed"])
    _write_csv(points, out / "map.csv")
    figures.chemical_map(points, chemical_map.KNOWN, out / FIGURES["map"])
    return True


def printed_candidates(table: pd.DataFrame) -> pd.DataFrame:
    """The candidate table as the report prints it: floats rounded once, before anything
    prints them, so that the CSV, the page and the hull context say the same figure
    (0.05049 eV/atom would read 0.050 in one and 0.051 in another), with the hull context."""
    table = collect.rounded(table)
    table["hull_context"] = [hull.context(row) for _, row in table.iterrows()]
    return table


def _dft_of_every_round(inputs: ReportInputs) -> pd.DataFrame | None:
    """Round 0's dft.parquet, then each later round's (dft/rounds/{k}/), with a round column."""
    from onnes.graph import CampaignGraph

    paths = {0: inputs.dft} if inputs.dft is not None and Path(inputs.dft).exists() else {}
    if "loop" in inputs.config:
        for k in CampaignGraph(inputs.config).dft_rounds():
            path = inputs.results / f"dft/rounds/{k}/dft.parquet"
            if k and path.exists():
                paths[k] = path
    tables = [crystals.read_table(path).assign(round=k) for k, path in paths.items()]
    return pd.concat(tables, ignore_index=True) if tables else None


def write_report(inputs: ReportInputs) -> Path:
    out = inputs.out_dir
    out.mkdir(parents=True, exist_ok=True)
    dft = _dft_of_every_round(inputs)

    funnel = collect.funnel_table(inputs.results, inputs.sources, dft)
    _write_csv(funnel, out / "funnel.csv")
    stability, protocol = collect.stability_table(inputs.results, inputs.sources)
    _write_csv(stability, out / "stability.csv")
    tables = {"quality": measured.quality_table(inputs.summary, inputs.sources),
              "steering": measured.steering_table(inputs.steering),
              "tc_predictor": measured.predictor_table(inputs.predictor_metrics),
              "dft": measured.dft_table(dft),
              "rounds": rounds.round_rows(inputs.results, inputs.config)}
    for name, table in tables.items():
        _write_csv(table, out / f"{name}.csv")
    figures.funnel(funnel, out / FIGURES["funnel"])
    figures.training(collect.training_curves(inputs.results, inputs.models), out / FIGURES["training"])
    tc, e_hull, density, n_elements, symbols = _distribution_data(inputs)
    figures.distributions(tc, e_hull, density, n_elements, out / FIGURES["distributions"])
    figures.space_groups(symbols, out / FIGURES["space_groups"])
    map_figure = _chemical_map(inputs, out)
    held_out = pd.read_csv(inputs.held_out) if inputs.held_out and Path(inputs.held_out).exists() else None
    figures.predictor(held_out, out / FIGURES["predictor"])

    top = inputs.config["report"]["top_candidates"]
    candidates = printed_candidates(collect.candidate_table(inputs.results, inputs.sources, dft, top))
    _write_csv(collect.printable(candidates, collect.CANDIDATE_COLUMNS), out / "candidates.csv")
    references = None
    if inputs.hull_references is not None and Path(inputs.hull_references).exists():
        references = hull.HullReferences.read(inputs.hull_references)
    assets = _candidate_assets(candidates, out, references)

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
    content = page.PageContent(
        campaign=inputs.config["campaign"], funnel=funnel, stability=stability, protocol=protocol,
        candidates=candidates, assets=assets, figures=FIGURES, provenance=record, config_yaml=config_yaml,
        notes=NOTES, quality=tables["quality"],
        quality_protocol=measured.metrics_protocol(inputs.results, inputs.sources), steering=tables["steering"],
        predictor=tables["tc_predictor"], dft=tables["dft"], rounds=tables["rounds"], map_figure=map_figure)
    _write_text(out / "index.html", page.render(content))
    log.info("report %s: %d sources, %d candidates, commit %s, %d DFT-verified", out / "index.html", len(funnel),
             len(candidates), record["git"]["commit"][:12], int(funnel.dft_verified.sum()))
    return out / "index.html"
