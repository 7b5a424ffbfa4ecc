"""Tc predictor: an ensemble of gradient-boosted trees (LightGBM) on composition and,
where a structure exists, structure descriptors; mean and spread from the ensemble.

Training data: SuperCon compositions (Stanev 2018) and 3DSC structures (Sommer 2023),
Tc in K with 0 = measured non-superconductor. The held-out split is grouped by reduced
composition, so no composition is in both train and test. Each member sees a different
bootstrap of the training rows and a different random feature subset; the spread of
their predictions is the (epistemic) uncertainty.

Out-of-domain score: mean distance to the k nearest training compositions in
standardised composition-feature space, divided by the 95th percentile of that distance
among the training rows themselves. A score above 1 flags a candidate further from the
data than 95 % of the training set is from itself (extrapolation; the high-Tc question).

Saved as text (LightGBM model strings in JSON, arrays in .npz without pickle).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from onnes.data.labels import composition_key
from onnes.io import atomic_path, write_json
from onnes.tc.features import STRUCTURE_FEATURES, feature_matrix, feature_names

log = logging.getLogger(__name__)

FORMAT = "onnes-tc-predictor/1"
PREDICTION_COLUMNS = ("tc_pred_mean", "tc_pred_std", "tc_ood_score", "tc_ood")


def training_table(supercon: pd.DataFrame | None, structures: pd.DataFrame | None) -> pd.DataFrame:
    """SuperCon (composition only) and 3DSC (with structures) rows with a known Tc, one
    table; ``group`` is the reduced-composition key the held-out split is grouped by."""
    parts = []
    if supercon is not None:
        parts.append(supercon[["id", "formula", "tc_K"]].assign(source="supercon"))
    if structures is not None:
        columns = ["id", "formula", "tc_K", "species", "frac_coords", "lattice"]
        parts.append(structures[columns].assign(source="3dsc"))
    if not parts:
        raise ValueError("the Tc predictor needs SuperCon or 3DSC in data.datasets")
    table = pd.concat(parts, ignore_index=True)
    table = table[np.isfinite(pd.to_numeric(table.tc_K, errors="coerce"))].reset_index(drop=True)
    table["group"] = table.formula.map(composition_key)
    return table[table.group.notna()].reset_index(drop=True)


def grouped_split(groups: pd.Series, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask: a random ``test_fraction`` of the distinct groups."""
    unique = np.array(sorted(groups.unique()))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(unique), size=max(1, int(round(test_fraction * len(unique)))), replace=False)
    return groups.isin(set(unique[chosen])).to_numpy()


@dataclass
class DomainModel:
    """k-nearest-neighbour distance in standardised composition-feature space."""

    mean: np.ndarray
    scale: np.ndarray
    reference: np.ndarray  # standardised training features (float32)
    threshold: float
    k: int

    @classmethod
    def fit(cls, features: np.ndarray, k: int, percentile: float = 95.0) -> "DomainModel":
        from sklearn.neighbors import NearestNeighbors

        features = np.nan_to_num(features)
        mean, scale = features.mean(0), features.std(0)
        scale[scale == 0] = 1.0
        reference = ((features - mean) / scale).astype(np.float32)
        # k + 1 neighbours: the nearest of a training row is itself.
        distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(reference).kneighbors(reference)
        threshold = float(np.percentile(distances[:, 1:].mean(1), percentile))
        return cls(mean, scale, reference, max(threshold, 1e-9), k)

    def score(self, features: np.ndarray) -> np.ndarray:
        from sklearn.neighbors import NearestNeighbors

        query = ((np.nan_to_num(features) - self.mean) / self.scale).astype(np.float32)
        distances, _ = NearestNeighbors(n_neighbors=self.k).fit(self.reference).kneighbors(query)
        return distances.mean(1) / self.threshold


class TcPredictor:
    def __init__(self, boosters: list, names: list[str], target: str, domain: DomainModel, composition_width: int):
        self.boosters = boosters
        self.names = names
        self.target = target  # "tc" or "log1p": the scale the trees are fitted on
        self.domain = domain
        self.composition_width = composition_width

    @classmethod
    def fit(cls, features: np.ndarray, tc: np.ndarray, settings: dict, seed: int) -> "TcPredictor":
        import lightgbm

        y = np.log1p(tc) if settings["target"] == "log1p" else tc
        rng = np.random.default_rng(seed)
        boosters = []
        for member in range(settings["ensemble"]):
            rows = rng.choice(len(y), size=len(y), replace=True)  # bootstrap
            params = {
                "objective": "regression", "learning_rate": settings["learning_rate"],
                "num_leaves": settings["num_leaves"], "min_data_in_leaf": settings["min_data_in_leaf"],
                "feature_fraction": settings["feature_fraction"], "seed": int(rng.integers(2**31 - 1)),
                "num_threads": settings["threads"], "verbosity": -1, "deterministic": True,
            }
            data = lightgbm.Dataset(features[rows], y[rows], free_raw_data=True)
            boosters.append(lightgbm.train(params, data, num_boost_round=settings["trees"]))
            log.info("Tc predictor: member %d/%d trained", member + 1, settings["ensemble"])
        width = features.shape[1] - len(STRUCTURE_FEATURES)  # composition columns come first
        domain = DomainModel.fit(features[:, :width], settings["ood_neighbours"])
        return cls(boosters, feature_names(), settings["target"], domain, width)

    def predict_features(self, features: np.ndarray) -> pd.DataFrame:
        members = np.stack([b.predict(features, num_threads=1) for b in self.boosters])
        if self.target == "log1p":
            members = np.expm1(members)
        members = np.clip(members, 0.0, None)  # Tc is never negative
        ood = self.domain.score(features[:, : self.composition_width])
        return pd.DataFrame({"tc_pred_mean": members.mean(0), "tc_pred_std": members.std(0),
                             "tc_ood_score": ood, "tc_ood": ood > 1.0})

    def predict(self, table: pd.DataFrame) -> pd.DataFrame:
        """Predictions for every row of a table with ``formula`` (and structure columns,
        when present); rows whose formula cannot be featurised get NaN."""
        features = feature_matrix(table)
        ok = np.isfinite(features[:, : self.composition_width]).all(1)
        out = pd.DataFrame({c: np.nan for c in PREDICTION_COLUMNS}, index=table.index)
        out["tc_ood"] = pd.array([pd.NA] * len(table), dtype="boolean")
        if ok.any():
            predicted = self.predict_features(features[ok])
            predicted.index = table.index[ok]
            for column in PREDICTION_COLUMNS:
                out.loc[ok, column] = predicted[column].to_numpy()
        return out

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "domain.npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, mean=self.domain.mean, scale=self.domain.scale, reference=self.domain.reference)
        write_json(directory / "model.json", {
            "format": FORMAT, "target": self.target, "features": self.names,
            "composition_width": self.composition_width,
            "domain": {"threshold": self.domain.threshold, "k": self.domain.k},
            "boosters": [b.model_to_string() for b in self.boosters],
        })

    @classmethod
    def load(cls, directory: str | Path) -> "TcPredictor":
        import lightgbm

        directory = Path(directory)
        meta = json.loads((directory / "model.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory}: not an onnes Tc predictor (format {meta.get('format')!r})")
        if meta["features"] != feature_names():
            raise ValueError(f"{directory}: trained on other features than this version computes; retrain it")
        with np.load(directory / "domain.npz", allow_pickle=False) as arrays:
            domain = DomainModel(arrays["mean"], arrays["scale"], arrays["reference"],
                                 meta["domain"]["threshold"], meta["domain"]["k"])
        boosters = [lightgbm.Booster(model_str=text) for text in meta["boosters"]]
        return cls(boosters, meta["features"], meta["target"], domain, meta["composition_width"])


def regression_metrics(true_tc: np.ndarray, predicted: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import mean_absolute_error, precision_score, r2_score, recall_score

    above, called = true_tc > threshold, predicted > threshold
    return {
        "r2": float(r2_score(true_tc, predicted)),
        "mae": float(mean_absolute_error(true_tc, predicted)),
        "r2_log1p": float(r2_score(np.log1p(true_tc), np.log1p(predicted))),
        "mae_log1p": float(mean_absolute_error(np.log1p(true_tc), np.log1p(predicted))),
        f"precision_above_{threshold:g}K": float(precision_score(above, called, zero_division=0)),
        f"recall_above_{threshold:g}K": float(recall_score(above, called, zero_division=0)),
        "count": int(len(true_tc)),
    }


def train_and_evaluate(table: pd.DataFrame, settings: dict, seed: int, out_dir: str | Path) -> dict:
    """Fit on the grouped training part, score the held-out part, save the model and
    ``metrics.json``. Headline ``r2``/``mae`` are on Tc in K (``target`` says so);
    log(1+Tc) figures are given beside them."""
    features = feature_matrix(table)
    usable = np.isfinite(features[:, : -len(STRUCTURE_FEATURES)]).all(1)
    if (~usable).any():
        log.warning("Tc predictor: %d rows without composition features left out", int((~usable).sum()))
    table, features = table[usable].reset_index(drop=True), features[usable]
    test = grouped_split(table.group, settings["test_fraction"], seed)
    tc = table.tc_K.to_numpy(float)
    predictor = TcPredictor.fit(features[~test], tc[~test], settings, seed)
    predicted = predictor.predict_features(features[test])
    threshold = settings["high_tc_threshold"]
    held_out = table[test].assign(pred=predicted.tc_pred_mean.to_numpy(), std=predicted.tc_pred_std.to_numpy())
    metrics = {
        "target": "tc_K",
        "fitted_on": settings["target"],
        **regression_metrics(held_out.tc_K.to_numpy(float), held_out.pred.to_numpy(), threshold),
        "split": "grouped by reduced composition",
        "train_rows": int((~test).sum()),
        "test_rows": int(test.sum()),
        "train_groups": int(table.group[~test].nunique()),
        "test_groups": int(table.group[test].nunique()),
        "shared_groups": int(len(set(table.group[test]) & set(table.group[~test]))),
        "ensemble": settings["ensemble"],
        "mean_spread_K": float(held_out["std"].mean()),
        # Fraction of held-out rows whose true Tc lies within mean +- 2 spread.
        "coverage_2sigma": float((np.abs(held_out.tc_K - held_out.pred) <= 2 * held_out["std"]).mean()),
        "ood_fraction_test": float(predicted.tc_ood.mean()),
        "by_source": {
            source: regression_metrics(part.tc_K.to_numpy(float), part.pred.to_numpy(), threshold)
            for source, part in held_out.groupby("source") if len(part) > 1
        },
    }
    predictor.save(out_dir)
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics
