"""Generation metrics from the literature, so campaign figures compare with published
tables (CDVAE: Xie et al., ICLR 2022; DiffCSP: Jiao et al., NeurIPS 2023).

- Fingerprints: structure = mean over sites of matminer's CrystalNN "ops" site
  fingerprint (61 numbers); composition = matminer's Magpie element-property statistics
  (132 numbers), standardised with the reference (test) set's mean and spread. CDVAE
  standardises with fixed MP-20 statistics; ours follow the reference actually used.
- Coverage (CDVAE): with Euclidean distances between fingerprints,
  recall = fraction of reference structures whose nearest generated structure is within
  the structure cutoff AND whose nearest generated composition is within the composition
  cutoff; precision = the same with generated and reference swapped. MP-20 cutoffs:
  structure 0.4, composition 10. Over valid generated structures.
- Wasserstein distances (scipy's 1-D earth mover's distance) of density (g/cm^3) and of
  the number of distinct elements, valid generated vs reference.
- Structure prediction (DiffCSP): for each reference structure one structure generated
  with its composition; match rate = fraction StructureMatcher-equivalent
  (stol 0.5, angle_tol 10, ltol 0.3); RMSE = mean over matches of StructureMatcher's
  normalised RMS displacement.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance

from onnes.crystals import to_structure

CSP_TOLERANCES = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
STRUCT_FEATURES = 61
COMP_FEATURES = 132


def _fingerprint_rows(rows: list[tuple]) -> list[tuple[np.ndarray, np.ndarray]]:
    from matminer.featurizers.composition.composite import ElementProperty
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

    crystal_nn = CrystalNNFingerprint.from_preset("ops")
    magpie = ElementProperty.from_preset("magpie", impute_nan=True)
    out = []
    for row in rows:
        struct_fp = np.full(STRUCT_FEATURES, np.nan)
        comp_fp = np.full(COMP_FEATURES, np.nan)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                structure = to_structure(dict(zip(("species", "frac_coords", "lattice"), row)))
                comp_fp = np.asarray(magpie.featurize(structure.composition), dtype=float)
                struct_fp = np.mean([crystal_nn.featurize(structure, i) for i in range(len(structure))], axis=0)
        except Exception:  # a structure CrystalNN cannot handle stays NaN and is left out
            pass
        out.append((struct_fp, comp_fp))
    return out


def fingerprints(table: pd.DataFrame, workers: int = 1) -> pd.DataFrame:
    """Columns ``struct_fp`` and ``comp_fp`` (lists) for every row, in order."""
    rows = list(zip(table.species, table.frac_coords, table.lattice))
    workers = max(1, min(workers, len(rows)))
    bounds = np.linspace(0, len(rows), workers + 1).astype(int)
    chunks = [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            ordered = [fp for part in pool.map(_fingerprint_rows, chunks) for fp in part]
    else:
        ordered = _fingerprint_rows(rows)
    return pd.DataFrame({"id": table.id.values,
                         "struct_fp": [list(s) for s, _ in ordered],
                         "comp_fp": [list(c) for _, c in ordered]})


def _matrix(column: pd.Series) -> np.ndarray:
    return np.array(column.tolist(), dtype=float) if len(column) else np.zeros((0, 1))


def coverage(generated: pd.DataFrame, reference: pd.DataFrame, struct_cutoff: float = 0.4,
             comp_cutoff: float = 10.0) -> dict:
    """CDVAE coverage recall and precision from fingerprint tables (see module doc)."""
    gen_s, ref_s = _matrix(generated.struct_fp), _matrix(reference.struct_fp)
    gen_c, ref_c = _matrix(generated.comp_fp), _matrix(reference.comp_fp)
    keep_gen = np.isfinite(gen_s).all(1) & np.isfinite(gen_c).all(1)
    keep_ref = np.isfinite(ref_s).all(1) & np.isfinite(ref_c).all(1)
    gen_s, gen_c, ref_s, ref_c = gen_s[keep_gen], gen_c[keep_gen], ref_s[keep_ref], ref_c[keep_ref]
    if not len(gen_s) or not len(ref_s):
        return {"cov_recall": 0.0, "cov_precision": 0.0, "n_generated": int(len(gen_s)),
                "n_reference": int(len(ref_s))}
    mean, std = ref_c.mean(0), ref_c.std(0)
    std[std == 0] = 1.0
    gen_c, ref_c = (gen_c - mean) / std, (ref_c - mean) / std
    struct_d, comp_d = cdist(gen_s, ref_s), cdist(gen_c, ref_c)  # (generated, reference)
    recall = (struct_d.min(0) <= struct_cutoff) & (comp_d.min(0) <= comp_cutoff)
    precision = (struct_d.min(1) <= struct_cutoff) & (comp_d.min(1) <= comp_cutoff)
    return {"cov_recall": float(recall.mean()), "cov_precision": float(precision.mean()),
            "n_generated": int(len(gen_s)), "n_reference": int(len(ref_s))}


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


def property_distances(generated: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """Wasserstein distances of density and number of elements (valid generated vs reference)."""
    gen_rho, gen_nel = _density_and_elements(generated)
    ref_rho, ref_nel = _density_and_elements(reference)
    if not len(gen_rho) or not len(ref_rho):
        return {"wdist_density": None, "wdist_num_elements": None}
    return {"wdist_density": float(wasserstein_distance(gen_rho, ref_rho)),
            "wdist_num_elements": float(wasserstein_distance(gen_nel, ref_nel))}


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
