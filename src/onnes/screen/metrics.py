"""Generation metrics from the literature, computed as CDVAE's and DiffCSP's evaluation
code computes them, so campaign figures compare with published tables (CDVAE: Xie et al.,
ICLR 2022; DiffCSP: Jiao et al., NeurIPS 2023).

- Fingerprints: structure = mean over sites of matminer's CrystalNN "ops" site
  fingerprint (61 numbers); composition = matminer's Magpie element-property statistics
  (132 numbers, missing element data left NaN), scaled with CDVAE's *fixed* MP-20 means
  and standard deviations, NaN then set to 0 (``data/cdvae_magpie_scaler.json``).
- Coverage (CDVAE): over *all* generated structures, valid or not, whose fingerprints
  could be computed; recall = fraction of reference structures whose nearest generated
  structure is within the structure cutoff AND whose nearest generated composition is
  within the composition cutoff; precision = the same count over the generated side
  divided by the number of generated structures *before* fingerprint failures were
  removed. MP-20 cutoffs: structure 0.4, composition 10. Beside them, the recall of
  each half alone (``cov_recall_structure``, ``cov_recall_composition``): which one
  limits COV-R.
- Wasserstein distances (scipy's 1-D earth mover's distance) of density (g/cm^3) and of
  the number of distinct elements: ``n`` valid generated structures drawn at random
  (1,000 in the papers) against the whole reference (test) split.
- Structure prediction (DiffCSP): for each reference structure one structure generated
  with its composition; match rate = fraction StructureMatcher-equivalent
  (stol 0.5, angle_tol 10, ltol 0.3); RMSE = mean over matches of StructureMatcher's
  normalised RMS displacement.
"""

from __future__ import annotations

import json
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance
from tqdm import tqdm

from onnes.crystals import to_structure

# Rows per fingerprint task: small enough for a progress line, large enough that building
# the featurisers per task costs little.
_FINGERPRINT_CHUNK = 50
CSP_TOLERANCES = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
STRUCT_FEATURES = 61
COMP_FEATURES = 132
LITERATURE_SAMPLES = 1000  # valid structures behind the published Wasserstein distances
MIN_VOLUME = 0.1  # A^3: a smaller (collapsed) cell gets no fingerprint, as in CDVAE


@lru_cache(maxsize=1)
def _cdvae_scaler() -> tuple[np.ndarray, np.ndarray]:
    data = json.loads((Path(__file__).parent / "data" / "cdvae_magpie_scaler.json").read_text())
    return np.asarray(data["means"]), np.asarray(data["stds"])


def scale_composition(comp_fp: np.ndarray) -> np.ndarray:
    """CDVAE's composition scaling: fixed MP-20 statistics, NaN features set to 0."""
    means, stds = _cdvae_scaler()
    scaled = (np.asarray(comp_fp, dtype=float) - means) / stds
    return np.where(np.isnan(scaled), 0.0, scaled)


def _fingerprint_rows(rows: list[tuple]) -> list[tuple[np.ndarray, np.ndarray]]:
    from matminer.featurizers.composition.composite import ElementProperty
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

    crystal_nn = CrystalNNFingerprint.from_preset("ops")
    magpie = ElementProperty.from_preset("magpie", impute_nan=False)
    out = []
    for row in rows:
        struct_fp = np.full(STRUCT_FEATURES, np.nan)
        comp_fp = np.full(COMP_FEATURES, np.nan)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                structure = to_structure(dict(zip(("species", "frac_coords", "lattice"), row)))
                comp_fp = np.asarray(magpie.featurize(structure.composition), dtype=float)
                if structure.volume >= MIN_VOLUME:  # CDVAE builds no structure below it
                    struct_fp = np.mean([crystal_nn.featurize(structure, i) for i in range(len(structure))],
                                        axis=0)
        except Exception:  # a structure CrystalNN cannot handle stays NaN and is left out
            struct_fp = np.full(STRUCT_FEATURES, np.nan)
        out.append((struct_fp, comp_fp))
    return out


def fingerprints(table: pd.DataFrame, workers: int = 1) -> pd.DataFrame:
    """Columns ``struct_fp`` and ``comp_fp`` (lists) for every row, in order."""
    rows = list(zip(table.species, table.frac_coords, table.lattice))
    workers = max(1, min(workers, len(rows)))
    chunks = [rows[a:a + _FINGERPRINT_CHUNK] for a in range(0, len(rows), _FINGERPRINT_CHUNK)]
    progress = tqdm(total=len(rows), desc="fingerprints", unit="struct", mininterval=10)
    ordered = []
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        for part in (pool.map(_fingerprint_rows, chunks) if pool else map(_fingerprint_rows, chunks)):
            ordered.extend(part)
            progress.update(len(part))
    progress.close()
    return pd.DataFrame({"id": table.id.values,
                         "struct_fp": [list(s) for s, _ in ordered],
                         "comp_fp": [list(c) for _, c in ordered]})


def _matrix(column: pd.Series) -> np.ndarray:
    return np.array(column.tolist(), dtype=float) if len(column) else np.zeros((0, 1))


def coverage(generated: pd.DataFrame, reference: pd.DataFrame, struct_cutoff: float = 0.4,
             comp_cutoff: float = 10.0) -> dict:
    """CDVAE coverage recall and precision from fingerprint tables of all generated
    structures and of the reference (see module doc)."""
    gen_s, ref_s = _matrix(generated.struct_fp), _matrix(reference.struct_fp)
    gen_c, ref_c = _matrix(generated.comp_fp), _matrix(reference.comp_fp)
    num_generated = len(gen_s)
    # CrystalNN failed: the row has no fingerprint (Magpie NaNs are scaled to 0 instead)
    keep_gen, keep_ref = np.isfinite(gen_s).all(1), np.isfinite(ref_s).all(1)
    gen_s, gen_c, ref_s, ref_c = gen_s[keep_gen], gen_c[keep_gen], ref_s[keep_ref], ref_c[keep_ref]
    counts = {"n_generated": int(num_generated), "n_fingerprinted": int(len(gen_s)),
              "n_reference": int(len(ref_s))}
    if not len(gen_s) or not len(ref_s):
        return {"cov_recall": 0.0, "cov_precision": 0.0, **counts}
    gen_c, ref_c = scale_composition(gen_c), scale_composition(ref_c)
    struct_d, comp_d = cdist(gen_s, ref_s), cdist(gen_c, ref_c)  # (generated, reference)
    structure_found, composition_found = struct_d.min(0) <= struct_cutoff, comp_d.min(0) <= comp_cutoff
    recall = structure_found & composition_found
    precision = (struct_d.min(1) <= struct_cutoff) & (comp_d.min(1) <= comp_cutoff)
    return {"cov_recall": float(recall.mean()), "cov_precision": float(precision.sum() / num_generated),
            "cov_recall_structure": float(structure_found.mean()),
            "cov_recall_composition": float(composition_found.mean()), **counts}


def _density_and_elements(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    density, elements = [], []
    for _, row in table.iterrows():
        try:
            structure = to_structure(row)
            density.append(float(structure.density))
            elements.append(len(structure.composition))
        except (ValueError, ZeroDivisionError):
            continue
    return np.array(density), np.array(elements)


def draw_valid(valid: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """``count`` valid structures drawn at random without replacement (all of them when
    fewer), as CDVAE draws the 1,000 behind its property distances."""
    if len(valid) <= count:
        return valid
    picked = np.random.default_rng(seed).choice(len(valid), size=count, replace=False)
    return valid.iloc[np.sort(picked)]


BOOTSTRAP_RESAMPLES = 1000


def resampled_distances(generated: np.ndarray, reference: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """W1(generated[row], reference) for every row of index array ``draws``, at once.

    In one dimension W1 is the area between the two empirical CDFs; both are step
    functions on the sorted union of the values, so each resample's CDF is a cumulative
    count of its draws over that grid (the same number scipy's wasserstein_distance
    gives each row, without a sort per resample)."""
    generated, reference = np.asarray(generated, float), np.asarray(reference, float)
    grid = np.unique(np.concatenate([generated, reference]))
    if len(grid) < 2:
        return np.zeros(len(draws))
    reference_cdf = np.searchsorted(np.sort(reference), grid[:-1], side="right") / len(reference)
    position = np.searchsorted(grid, generated)
    rows, size = draws.shape
    flat = (np.arange(rows)[:, None] * len(grid) + position[draws]).ravel()
    counts = np.bincount(flat, minlength=rows * len(grid)).reshape(rows, len(grid))
    cdf = np.cumsum(counts, axis=1)[:, :-1] / size
    return np.abs(cdf - reference_cdf) @ np.diff(grid)


def wasserstein_interval(generated: np.ndarray, reference: np.ndarray, seed: int = 0,
                         resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of W(generated, reference), resampling the generated values (the
    sample a sampler drew; the reference split is fixed). It is what two samplers'
    distances are compared by, as Wilson intervals compare their rates.

    A resample repeats values, which roughens its distribution, so resampled distances
    run above the sample's own (at 20 values every one of 1,000 did, in the demo). The
    interval is therefore the resamples' percentiles shifted by that bias (their mean
    minus the sample's distance), clipped at 0: it always holds the estimate, and at the
    literature's 1,000 values, where the bias is small, it is the plain percentile one."""
    draws = np.random.default_rng(seed).integers(0, len(generated), size=(resamples, len(generated)))
    distances = resampled_distances(generated, reference, draws)
    bias = distances.mean() - wasserstein_distance(generated, reference)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(distances, [tail, 100.0 - tail]) - bias
    return float(max(low, 0.0)), float(max(high, 0.0))


def property_distances(generated: pd.DataFrame, reference: pd.DataFrame, seed: int = 0) -> dict:
    """Wasserstein distances of density and number of elements (the valid generated
    structures given vs the whole reference), each with its 95 % bootstrap interval."""
    gen_rho, gen_nel = _density_and_elements(generated)
    ref_rho, ref_nel = _density_and_elements(reference)
    if not len(gen_rho) or not len(ref_rho):
        return {"wdist_density": None, "wdist_num_elements": None}
    return {"wdist_density": float(wasserstein_distance(gen_rho, ref_rho)),
            "wdist_density_ci95": list(wasserstein_interval(gen_rho, ref_rho, seed)),
            "wdist_num_elements": float(wasserstein_distance(gen_nel, ref_nel)),
            "wdist_num_elements_ci95": list(wasserstein_interval(gen_nel, ref_nel, seed)),
            "n_wdist_generated": int(len(gen_rho)), "n_wdist_reference": int(len(ref_rho))}


def csp_match(predicted: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """DiffCSP match rate and RMSE: ``predicted.target_id`` names the reference row each
    prediction was generated for; a prediction that fails to build, or is structurally
    invalid, counts as no match (a collapsed cell would stall Niggli reduction)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from onnes.screen.validity import structural_validity

    matcher = StructureMatcher(**CSP_TOLERANCES)
    truth = reference.set_index("id")
    valid = structural_validity(predicted).valid_struct.to_numpy()
    matched, rms = 0, []
    for (_, row), ok in zip(predicted.iterrows(), valid):
        if not ok:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = matcher.get_rms_dist(to_structure(row), to_structure(truth.loc[row["target_id"]]))
        except (ValueError, KeyError, np.linalg.LinAlgError):
            result = None
        if result is not None:
            matched += 1
            rms.append(result[0])
    total = len(predicted)
    return {"csp_match_rate": matched / total if total else 0.0,
            "csp_rmse": float(np.mean(rms)) if rms else None, "csp_count": total}


def generation_metrics(screened: pd.DataFrame, reference: pd.DataFrame, reference_fp: pd.DataFrame,
                       settings: dict, seed: int, workers: int = 1, csp: pd.DataFrame | None = None) -> dict:
    """The literature's generation metrics of one source, labelled with their protocol.

    Coverage over the first ``max_structures`` generated structures (their generated
    geometry, not the relaxed one) against the fingerprinted reference; Wasserstein
    distances over ``wdist_samples`` valid ones drawn with ``seed``; the structure-
    prediction match rate when ``csp`` is given. ``protocol`` says "literature" only when
    the counts are the papers' (settings ``screen.metrics``).
    """
    generated = screened.head(settings["max_structures"]).copy()
    for column in ("frac_coords", "lattice"):
        if f"{column}_generated" in generated:
            generated[column] = generated[f"{column}_generated"]
    result = coverage(fingerprints(generated, workers), reference_fp, settings["struct_cutoff"],
                      settings["comp_cutoff"])
    result.update(property_distances(draw_valid(generated[generated.valid], settings["wdist_samples"], seed),
                                     reference, seed))
    literature = (result["n_generated"] >= LITERATURE_SAMPLES and len(reference_fp) == len(reference)
                  and result.get("n_wdist_generated", 0) >= LITERATURE_SAMPLES)
    result["protocol"] = "literature" if literature else (
        f"reduced: {result['n_generated']} generated, {result.get('n_wdist_generated', 0)} valid for the "
        f"distances, {len(reference_fp)} of {len(reference)} reference structures")
    if csp is not None:
        result.update(csp_match(csp, reference))
    return result
