"""Tc predictor, two-stage (hurdle) as the SuperCon literature frames it: gradient-boosted
trees (LightGBM) on composition and, where a structure exists, structure descriptors.

1. Classifiers: "superconducting" (Tc > 0) and "Tc above T" for each threshold T (Stanev
   et al., npj Comput. Mater. 2018, classify at 10 K before regressing).
2. Regressor of Tc over superconductors only (Hamidieh, Comput. Mater. Sci. 2018):
   an ensemble whose members see different row and feature subsets; their spread sigma.
3. Combined: expected Tc = P(superconducting) * Tc-if-superconducting; a conformal
   interval on Tc-if-superconducting (``conformal.py``), calibrated on compositions the
   regressor never saw.

Training data: SuperCon compositions (Stanev 2018) and 3DSC structures (Sommer 2023),
Tc in K with 0 = measured non-superconductor; SuperCon's repeated records of one
composition become one row by ``labels.composition_tc``'s rule. Splits are grouped by
reduced composition: no composition is in two of train, calibration and test.

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

from onnes.data.labels import composition_key, composition_tc
from onnes.io import atomic_path, write_json
from onnes.tc.conformal import NormalisedConformal, level_key
from onnes.tc.features import STRUCTURE_FEATURES, feature_matrix, feature_names

log = logging.getLogger(__name__)

FORMAT = "onnes-tc-predictor/2"
# Every prediction table has these; ``tc_p_above_{T}K`` per classifier threshold and
# ``tc_lo_{L}``/``tc_hi_{L}`` per interval level come after them.
BASE_COLUMNS = ("tc_pred_mean", "tc_pred_std", "tc_p_superconducting", "tc_if_superconducting",
                "tc_ood_score", "tc_ood")


def above_column(threshold: float) -> str:
    return f"tc_p_above_{threshold:g}K"


def flag(table: pd.DataFrame, column: str) -> pd.Series:
    """A boolean funnel column with missing values (and a missing column) as False."""
    if column not in table:
        return pd.Series(False, index=table.index)
    return table[column].astype("boolean").fillna(False).astype(bool)


def in_domain(table: pd.DataFrame) -> pd.Series:
    """Rows the predictor calls in-domain; a row without a prediction is not."""
    return ~table["tc_ood"].astype("boolean").fillna(True).astype(bool)


def training_table(supercon: pd.DataFrame | None, structures: pd.DataFrame | None) -> pd.DataFrame:
    """SuperCon (composition only, one row per reduced composition) and 3DSC (one row per
    structure) rows with a known Tc, one table; ``group`` is the reduced-composition key
    the splits are grouped by."""
    parts = []
    if supercon is not None:
        parts.append(one_row_per_composition(supercon[["id", "formula", "tc_K"]]).assign(source="supercon"))
    if structures is not None:
        columns = ["id", "formula", "tc_K", "species", "frac_coords", "lattice"]
        parts.append(structures[columns].assign(source="3dsc"))
    if not parts:
        raise ValueError("the Tc predictor needs SuperCon or 3DSC in data.datasets")
    table = pd.concat(parts, ignore_index=True)
    table = table[np.isfinite(pd.to_numeric(table.tc_K, errors="coerce"))].reset_index(drop=True)
    table["group"] = table.formula.map(composition_key)
    return table[table.group.notna()].reset_index(drop=True)


def one_row_per_composition(records: pd.DataFrame) -> pd.DataFrame:
    """The first record of each reduced composition, with the composition's Tc by
    ``composition_tc``'s rule (a Tc above 0 K overrules 0 K records) and the count of
    records it stands for (``tc_n_records``)."""
    keys = records.formula.map(composition_key)
    known = records[keys.notna()].assign(group=keys[keys.notna()])
    summary = composition_tc(known.group, known.tc_K)
    first = known.drop_duplicates("group").set_index("group")
    first = first.loc[first.index.intersection(summary.index)]
    first["tc_K"] = summary.tc_K.reindex(first.index)
    first["tc_n_records"] = summary.tc_n_records.reindex(first.index)
    first["tc_zero_overruled"] = summary.tc_zero_overruled.reindex(first.index)
    return first.reset_index(drop=True)


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
    """Hurdle model: classifiers (superconducting; above each threshold), a regressor
    ensemble over superconductors, a conformal calibration and an out-of-domain model."""

    def __init__(self, superconducting, above: dict[float, object], regressors: list, target: str,
                 conformal: NormalisedConformal, levels: list[float], domain: DomainModel,
                 composition_width: int, names: list[str]):
        self.superconducting = superconducting
        self.above = above
        self.regressors = regressors
        self.target = target  # "tc" or "log1p": the scale the regressor is fitted on
        self.conformal = conformal
        self.levels = levels
        self.domain = domain
        self.composition_width = composition_width
        self.names = names

    @property
    def columns(self) -> list[str]:
        intervals = [f"tc_{side}_{level_key(level)}" for level in self.levels for side in ("lo", "hi")]
        return list(BASE_COLUMNS) + [above_column(t) for t in self.above] + intervals

    @classmethod
    def fit(cls, features: np.ndarray, tc: np.ndarray, calibration: np.ndarray, settings: dict,
            seed: int) -> "TcPredictor":
        """Classifiers on every row; the regressor on the superconductors outside
        ``calibration`` (a boolean mask of rows), calibrated on those inside it."""
        rng = np.random.default_rng(seed)
        superconducting = _classifier(features, tc > 0, settings, rng)
        above = {float(t): _classifier(features, tc > t, settings, rng) for t in settings["thresholds"]}
        fit_rows = (tc > 0) & ~calibration
        y = _to_target(tc[fit_rows], settings["target"])
        regressors = []
        for member in range(settings["ensemble"]):
            params = {**_tree_params(settings, rng), "objective": "regression",
                      "bagging_fraction": settings["bagging_fraction"], "bagging_freq": 1}
            regressors.append(_train(params, features[fit_rows], y, settings["trees"]))
            log.info("Tc predictor: regressor %d/%d trained", member + 1, settings["ensemble"])
        width = features.shape[1] - len(STRUCTURE_FEATURES)  # composition columns come first
        domain = DomainModel.fit(features[:, :width], settings["ood_neighbours"])
        predictor = cls(superconducting, above, regressors, settings["target"], None, list(settings["interval_levels"]),
                        domain, width, feature_names())
        cal_rows = (tc > 0) & calibration
        mu, sigma = predictor._regress(features[cal_rows])
        predictor.conformal = NormalisedConformal.calibrate(_to_target(tc[cal_rows], settings["target"]), mu, sigma,
                                                            predictor.levels)
        return predictor

    def _regress(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and spread on the fitted scale."""
        members = np.stack([b.predict(features, num_threads=1) for b in self.regressors])
        return members.mean(0), members.std(0)

    def predict_features(self, features: np.ndarray) -> pd.DataFrame:
        mu, sigma = self._regress(features)
        if_sc = np.clip(_from_target(mu, self.target), 0.0, None)  # Tc is never negative
        # The spread in K: half the width of the back-transformed +-1 sigma band.
        spread = 0.5 * (_from_target(mu + sigma, self.target) - _from_target(mu - sigma, self.target))
        p_sc = self.superconducting.predict(features, num_threads=1)
        ood = self.domain.score(features[:, : self.composition_width])
        out = pd.DataFrame({"tc_pred_mean": p_sc * if_sc, "tc_pred_std": spread, "tc_p_superconducting": p_sc,
                            "tc_if_superconducting": if_sc, "tc_ood_score": ood, "tc_ood": ood > 1.0})
        for threshold, classifier in self.above.items():
            out[above_column(threshold)] = classifier.predict(features, num_threads=1)
        for level in self.levels:
            lo, hi = self.conformal.interval(mu, sigma, level)
            out[f"tc_lo_{level_key(level)}"] = np.clip(_from_target(lo, self.target), 0.0, None)
            out[f"tc_hi_{level_key(level)}"] = np.clip(_from_target(hi, self.target), 0.0, None)
        return out

    def predict(self, table: pd.DataFrame) -> pd.DataFrame:
        """Predictions for every row of a table with ``formula`` (and structure columns,
        when present); rows whose formula cannot be featurised get NaN."""
        features = feature_matrix(table)
        ok = np.isfinite(features[:, : self.composition_width]).all(1)
        out = pd.DataFrame({c: np.nan for c in self.columns}, index=table.index)
        out["tc_ood"] = pd.array([pd.NA] * len(table), dtype="boolean")
        if ok.any():
            predicted = self.predict_features(features[ok])
            predicted.index = table.index[ok]
            for column in self.columns:
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
            "levels": self.levels, "conformal": self.conformal.to_dict(),
            "superconducting": self.superconducting.model_to_string(),
            "above": [{"threshold": t, "booster": b.model_to_string()} for t, b in self.above.items()],
            "regressors": [b.model_to_string() for b in self.regressors],
        })

    @classmethod
    def load(cls, directory: str | Path) -> "TcPredictor":
        import lightgbm

        directory = Path(directory)
        meta = json.loads((directory / "model.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory}: not an onnes Tc predictor of this version "
                             f"(format {meta.get('format')!r}, expected {FORMAT!r}); retrain it with `onnes tc train`")
        if meta["features"] != feature_names():
            raise ValueError(f"{directory}: trained on other features than this version computes; retrain it")
        with np.load(directory / "domain.npz", allow_pickle=False) as arrays:
            domain = DomainModel(arrays["mean"], arrays["scale"], arrays["reference"],
                                 meta["domain"]["threshold"], meta["domain"]["k"])

        def booster(text: str):
            return lightgbm.Booster(model_str=text)

        return cls(booster(meta["superconducting"]), {float(a["threshold"]): booster(a["booster"]) for a in meta["above"]},
                   [booster(text) for text in meta["regressors"]], meta["target"],
                   NormalisedConformal.from_dict(meta["conformal"]), [float(x) for x in meta["levels"]], domain,
                   meta["composition_width"], meta["features"])


def _to_target(tc: np.ndarray, target: str) -> np.ndarray:
    return np.log1p(tc) if target == "log1p" else tc


def _from_target(y: np.ndarray, target: str) -> np.ndarray:
    return np.expm1(y) if target == "log1p" else y


def _tree_params(settings: dict, rng: np.random.Generator) -> dict:
    return {"learning_rate": settings["learning_rate"], "num_leaves": settings["num_leaves"],
            "min_data_in_leaf": settings["min_data_in_leaf"], "feature_fraction": settings["feature_fraction"],
            "seed": int(rng.integers(2**31 - 1)), "num_threads": settings["threads"], "verbosity": -1,
            "deterministic": True}


def _train(params: dict, features: np.ndarray, y: np.ndarray, trees: int):
    import lightgbm

    return lightgbm.train(params, lightgbm.Dataset(features, y, free_raw_data=True), num_boost_round=trees)


def _classifier(features: np.ndarray, label: np.ndarray, settings: dict, rng: np.random.Generator):
    if label.all() or not label.any():
        raise ValueError(f"the Tc classifiers need both classes in the training rows; all {len(label)} are "
                         f"{'positive' if label.any() else 'negative'} (add SuperCon, or more records)")
    params = {**_tree_params(settings, rng), "objective": "binary"}
    return _train(params, features, label.astype(float), settings["trees"])


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


def classification_metrics(truth: np.ndarray, probability: np.ndarray) -> dict:
    """Accuracy, precision and recall at p = 0.5, and ROC-AUC (NaN with one class)."""
    from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score

    called = probability > 0.5
    both = 0 < truth.sum() < len(truth)
    return {
        "accuracy": float(accuracy_score(truth, called)),
        "roc_auc": float(roc_auc_score(truth, probability)) if both else float("nan"),
        "precision": float(precision_score(truth, called, zero_division=0)),
        "recall": float(recall_score(truth, called, zero_division=0)),
        "count": int(len(truth)),
        "positives": int(truth.sum()),
    }


def interval_metrics(truth: np.ndarray, predicted: pd.DataFrame, levels: list[float]) -> dict:
    out = {}
    for level in levels:
        lo, hi = predicted[f"tc_lo_{level_key(level)}"].to_numpy(), predicted[f"tc_hi_{level_key(level)}"].to_numpy()
        out[level_key(level)] = {"nominal": level, "coverage": float(((truth >= lo) & (truth <= hi)).mean()),
                                 "median_width_K": float(np.median(hi - lo))}
    return out


def grouped_calibration(groups: pd.Series, test: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of calibration rows: ``fraction`` of the training compositions."""
    part = grouped_split(groups[~test], fraction, seed + 1)
    mask = np.zeros(len(groups), bool)
    mask[np.flatnonzero(~test)[part]] = True
    return mask


def evaluate(table: pd.DataFrame, features: np.ndarray, settings: dict, seed: int) -> tuple[TcPredictor, dict]:
    """Fit on the grouped training part and score the held-out part (``metrics.json``)."""
    usable = np.isfinite(features[:, : -len(STRUCTURE_FEATURES)]).all(1)
    if (~usable).any():
        log.warning("Tc predictor: %d rows without composition features left out", int((~usable).sum()))
    table, features = table[usable].reset_index(drop=True), features[usable]
    test = grouped_split(table.group, settings["test_fraction"], seed)
    calibration = grouped_calibration(table.group, test, settings["calibration_fraction"], seed)
    tc = table.tc_K.to_numpy(float)
    predictor = TcPredictor.fit(features[~test], tc[~test], calibration[~test], settings, seed)
    predicted = predictor.predict_features(features[test])
    truth, source = tc[test], table.source.to_numpy()[test]
    superconductor = truth > 0

    def regression(mask: np.ndarray) -> dict:
        from sklearn.metrics import mean_absolute_error, r2_score

        y, p = truth[mask], predicted.tc_if_superconducting.to_numpy()[mask]
        return {"r2": float(r2_score(y, p)), "mae": float(mean_absolute_error(y, p)),
                "r2_log1p": float(r2_score(np.log1p(y), np.log1p(p))),
                "mae_log1p": float(mean_absolute_error(np.log1p(y), np.log1p(p))), "count": int(mask.sum())}

    classification = {"superconducting": classification_metrics(superconductor, predicted.tc_p_superconducting.to_numpy())}
    for threshold in predictor.above:
        p_above = predicted[above_column(threshold)].to_numpy()
        classification[f"above_{threshold:g}K"] = classification_metrics(truth > threshold, p_above)
        # Stanev 2018's framing: the threshold classifier among superconductors alone.
        classification[f"above_{threshold:g}K_superconductors"] = classification_metrics(
            truth[superconductor] > threshold, p_above[superconductor])
    split_counts = {
        "split": "grouped by reduced composition",
        "train_rows": int((~test & ~calibration).sum()), "calibration_rows": int(calibration.sum()),
        "test_rows": int(test.sum()), "train_groups": int(table.group[~test & ~calibration].nunique()),
        "calibration_groups": int(table.group[calibration].nunique()), "test_groups": int(table.group[test].nunique()),
        "shared_groups": int(len(set(table.group[test]) & set(table.group[~test]))
                             + len(set(table.group[calibration]) & set(table.group[~test & ~calibration]))),
    }
    first = float(settings["thresholds"][0])
    metrics = {
        "model": "hurdle: classifiers (Tc > 0; Tc > each threshold) + regressor over superconductors",
        "fitted_on": settings["target"],
        **split_counts,
        "label_rule": "a composition with any record above 0 K is superconducting, Tc = median of those records",
        "classification": classification,
        "regression_superconductors": {**regression(superconductor),
                                       "by_source": {name: regression(superconductor & (source == name))
                                                     for name in sorted(set(source[superconductor]))
                                                     if (superconductor & (source == name)).sum() > 1}},
        "intervals": {**interval_metrics(truth[superconductor], predicted[superconductor], predictor.levels),
                      "method": "normalised split-conformal, |y - mu| / (sigma + c), on held-out compositions",
                      **predictor.conformal.to_dict()},
        # The expected Tc on every held-out row (non-superconductors included): the
        # single-stage figures of earlier versions, kept for continuity.
        "mixed_rows_expected_tc": regression_metrics(truth, predicted.tc_pred_mean.to_numpy(), first),
        "ensemble": settings["ensemble"],
        "mean_spread_K": float(predicted.tc_pred_std[superconductor].mean()),
        "ood_fraction_test": float(predicted.tc_ood.mean()),
    }
    return predictor, metrics


def train_and_evaluate(table: pd.DataFrame, settings: dict, seed: int, out_dir: str | Path) -> dict:
    """``evaluate`` on the table's own features; saves the model and ``metrics.json``."""
    predictor, metrics = evaluate(table, feature_matrix(table), settings, seed)
    predictor.save(out_dir)
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics
