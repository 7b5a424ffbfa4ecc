"""A map of where the sources sample in chemical space, beside the known crystals.

Each crystal is placed by its composition: matminer's Magpie element-property statistics
(the composition fingerprint of the COV metrics, scaled by CDVAE's fixed MP-20 statistics),
embedded in two dimensions by t-SNE (van der Maaten & Hinton 2008; scikit-learn, PCA
initialisation, fixed seed). Composition, not structure: it is cheap for every sample and
is where a round collapsing onto a few chemistries shows first. Known crystals are a
seeded subsample of the structure reference's training split; each source contributes
its first valid samples. The table behind the figure says which crystal is which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from onnes import crystals
from onnes.matching import reduced_formulas

KNOWN = "known (training split)"


def _valid_samples(results: Path, source: str, count: int) -> pd.DataFrame:
    screened = crystals.read_table(results / f"screen/{source}/screened.parquet")
    valid = screened[screened.valid.astype(bool)].head(count)
    out = pd.DataFrame({"id": valid.id, "source": source, "formula": reduced_formulas(valid).values,
                        "confirmed": valid.msun_confirmed.astype(bool) if "msun_confirmed" in valid else False})
    predicted = results / f"tc/{source}/predicted.parquet"
    out["p_tc_above_10K"] = np.nan
    if predicted.exists():
        table = crystals.read_table(predicted, columns=["id", "tc_p_above_10K"])
        out["p_tc_above_10K"] = out.id.map(table.set_index("id").tc_p_above_10K).astype(float).values
    return out


def map_points(results: Path, sources: list[str], rounds: dict[str, int], reference: pd.DataFrame,
               known: int, per_source: int, seed: int) -> pd.DataFrame:
    """The crystals on the map (known subsample, then each source's first valid samples)
    with columns id, source, round, formula, confirmed, p_tc_above_10K."""
    sample = reference.sample(n=min(known, len(reference)), random_state=seed) if len(reference) else reference
    frames = [pd.DataFrame({"id": sample.id, "source": KNOWN, "formula": reduced_formulas(sample).values,
                            "confirmed": False, "p_tc_above_10K": np.nan})]
    frames += [_valid_samples(results, source, per_source) for source in sources]
    points = pd.concat(frames, ignore_index=True)
    points["round"] = points.source.map(rounds).astype("Int64")
    return points


def embed(points: pd.DataFrame, seed: int) -> pd.DataFrame:
    """x, y for every point: t-SNE of the scaled Magpie features of its composition
    (featurised once per distinct formula)."""
    from matminer.featurizers.composition.composite import ElementProperty
    from pymatgen.core import Composition
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    from onnes.screen.metrics import scale_composition

    if len(points) < 5:  # too few for an embedding: the table still lists them
        return points.assign(x=np.nan, y=np.nan)
    magpie = ElementProperty.from_preset("magpie", impute_nan=False)
    formulas = points.formula.unique()
    features = np.array([magpie.featurize(Composition(f)) for f in formulas], dtype=float)
    by_formula = dict(zip(formulas, scale_composition(features)))
    matrix = np.stack([by_formula[f] for f in points.formula])
    perplexity = float(min(30, max(2, (len(points) - 1) // 3)))
    # One OpenMP thread: Barnes-Hut sums gradients across threads in varying order, and
    # t-SNE amplifies the rounding, so only a fixed thread count gives the same map twice.
    with threadpool_limits(limits=1, user_api="openmp"):
        xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(matrix)
    return points.assign(x=xy[:, 0], y=xy[:, 1])
