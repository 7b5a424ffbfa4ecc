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

Physics the records do not carry (``physics.py``): band insulators from the DFT table
join the training rows as Tc = 0 examples; a metallicity gate (P(band insulator) from
composition) gives every prediction a verdict, and optionally multiplies the
probabilities; high-pressure records are left out of ambient-pressure training. Each
prediction names its three nearest training superconductors (the "why").

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
from onnes.tc.features import STRUCTURE_FEATURES, composition_features, feature_matrix, feature_names
from onnes.tc.physics import at_most, band_insulators, high_pressure_mask, metallicity_table

log = logging.getLogger(__name__)

FORMAT = "onnes-tc-predictor/3"
# Every prediction table has these; ``tc_p_above_{T}K`` per classifier threshold and
# ``tc_lo_{L}``/``tc_hi_{L}`` per interval level come after them.
BASE_COLUMNS = ("tc_pred_mean", "tc_pred_std", "tc_p_superconducting", "tc_if_superconducting",
                "tc_ood_score", "tc_ood", "tc_p_insulator", "tc_insulator", "tc_nearest_superconductors")
NEAREST = 3  # known superconductors named beside each prediction
# Held-out records with their predictions, written beside metrics.json (parity, calibration).
HELD_OUT_FILE = "held_out.csv"


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


def training_table(supercon: pd.DataFrame | None, structures: pd.DataFrame | None,
                   dft: pd.DataFrame | None = None, negatives: dict | None = None,
                   ambient_only: bool = True) -> pd.DataFrame:
    """SuperCon (composition only, one row per reduced composition) and 3DSC (one row per
    structure) rows with a known Tc, one table; ``group`` is the reduced-composition key
    the splits are grouped by. Superconducting records of high-pressure-only compositions
    (``physics.high_pressure_only``) are left out when ``ambient_only`` (their count in
    ``table.attrs["high_pressure_dropped"]``), else kept and marked ``high_pressure``.
    With a DFT table (formula, band_gap) and ``negatives`` settings, its band insulators
    follow as Tc = 0 rows of source ``dft_insulator``, except compositions the records
    label."""
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
    table = table[table.group.notna()].reset_index(drop=True)
    table["high_pressure"] = high_pressure_mask(table.formula).to_numpy() & (table.tc_K > 0).to_numpy()
    dropped = int(table.high_pressure.sum()) if ambient_only else 0
    if ambient_only:
        table = table[~table.high_pressure].reset_index(drop=True)
    if dft is not None and negatives is not None and negatives.get("enabled", True):
        insulators = band_insulators(dft, negatives["band_gap_min"], negatives["max_e_above_hull"])
        insulators = insulators[~insulators.group.isin(set(table.group))]
        insulators = at_most(insulators, negatives.get("max_compositions"))
        table = pd.concat([table, insulators.drop(columns=["band_gap"]).assign(source="dft_insulator",
                                                                                 high_pressure=False)],
                          ignore_index=True)
    table.attrs["high_pressure_dropped"] = dropped
    return table


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
    """k-nearest-neighbour distance in standardised composition-feature space, and the
    training rows' formulas and Tc, to name a prediction's nearest known superconductors."""

    mean: np.ndarray
    scale: np.ndarray
    reference: np.ndarray  # standardised training features (float32)
    threshold: float
    k: int
    formulas: np.ndarray  # training formula per reference row
    tc: np.ndarray  # training Tc per reference row (K)

    @classmethod
    def fit(cls, features: np.ndarray, k: int, formulas: np.ndarray, tc: np.ndarray,
            percentile: float = 95.0) -> "DomainModel":
        from sklearn.neighbors import NearestNeighbors

        features = np.nan_to_num(features)
        mean, scale = features.mean(0), features.std(0)
        scale[scale == 0] = 1.0
        reference = ((features - mean) / scale).astype(np.float32)
        # k + 1 neighbours: the nearest of a training row is itself.
        distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(reference).kneighbors(reference)
        threshold = float(np.percentile(distances[:, 1:].mean(1), percentile))
        return cls(mean, scale, reference, max(threshold, 1e-9), k, np.asarray(formulas, dtype=str),
                   np.asarray(tc, dtype=float))

    def _standardise(self, features: np.ndarray) -> np.ndarray:
        return ((np.nan_to_num(features) - self.mean) / self.scale).astype(np.float32)

    def score(self, features: np.ndarray) -> np.ndarray:
        from sklearn.neighbors import NearestNeighbors

        distances, _ = NearestNeighbors(n_neighbors=self.k).fit(self.reference).kneighbors(self._standardise(features))
        return distances.mean(1) / self.threshold

    def nearest_superconductors(self, features: np.ndarray, count: int = NEAREST) -> list[str]:
        """'formula (Tc K); ...' of the ``count`` nearest training superconductors."""
        from sklearn.neighbors import NearestNeighbors

        superconductors = np.flatnonzero(self.tc > 0)
        if not len(superconductors) or not len(features):
            return [""] * len(features)
        # Several structures of one compound (3DSC) are one answer: look further, keep distinct formulas.
        _, index = NearestNeighbors(n_neighbors=min(5 * count, len(superconductors))).fit(
            self.reference[superconductors]).kneighbors(self._standardise(features))
        named = []
        for row in superconductors[index]:
            first: dict[str, int] = {}  # formula -> its nearest row, nearest first
            for j in row:
                first.setdefault(self.formulas[j], j)
            named.append("; ".join(f"{formula} ({self.tc[j]:.3g} K)" for formula, j in list(first.items())[:count]))
        return named


class TcPredictor:
    """Hurdle model: classifiers (superconducting; above each threshold), a regressor
    ensemble over superconductors, a conformal calibration, an out-of-domain model and
    an optional metallicity gate."""

    def __init__(self, superconducting, above: dict[float, object], regressors: list, target: str,
                 conformal: NormalisedConformal, levels: list[float], domain: DomainModel,
                 composition_width: int, names: list[str], gate=None, gate_use: str = "verdict"):
        self.superconducting = superconducting
        self.above = above
        self.regressors = regressors
        self.target = target  # "tc" or "log1p": the scale the regressor is fitted on
        self.conformal = conformal
        self.levels = levels
        self.domain = domain
        self.composition_width = composition_width
        self.names = names
        self.gate = gate  # P(band insulator) from composition features, or None
        self.gate_use = gate_use  # "verdict": a column only; "multiply": scales the probabilities

    @property
    def columns(self) -> list[str]:
        intervals = [f"tc_{side}_{level_key(level)}" for level in self.levels for side in ("lo", "hi")]
        return list(BASE_COLUMNS) + [above_column(t) for t in self.above] + intervals

    @classmethod
    def fit(cls, features: np.ndarray, tc: np.ndarray, calibration: np.ndarray, settings: dict,
            seed: int, formulas: np.ndarray, weights: np.ndarray | None = None,
            gate_data: tuple[np.ndarray, np.ndarray] | None = None) -> "TcPredictor":
        """Classifiers on every row (``weights`` per row); the regressor on the
        superconductors outside ``calibration`` (a boolean mask of rows), calibrated on
        those inside it; the gate on ``gate_data`` (composition features, insulator 0/1)."""
        rng = np.random.default_rng(seed)
        superconducting = _classifier(features, tc > 0, settings, rng, weights)
        above = {float(t): _classifier(features, tc > t, settings, rng, weights) for t in settings["thresholds"]}
        fit_rows = (tc > 0) & ~calibration
        y = _to_target(tc[fit_rows], settings["target"])
        regressors = []
        for member in range(settings["ensemble"]):
            params = {**_tree_params(settings, rng), "objective": "regression",
                      "bagging_fraction": settings["bagging_fraction"], "bagging_freq": 1}
            regressors.append(_train(params, features[fit_rows], y, settings["trees"]))
            log.info("Tc predictor: regressor %d/%d trained", member + 1, settings["ensemble"])
        width = features.shape[1] - len(STRUCTURE_FEATURES)  # composition columns come first
        domain = DomainModel.fit(features[:, :width], settings["ood_neighbours"], formulas, tc)
        gate = None
        if gate_data is not None:
            gate = _classifier(gate_data[0], gate_data[1] > 0.5, settings, rng)
            log.info("Tc predictor: metallicity gate trained on %d compositions", len(gate_data[1]))
        predictor = cls(superconducting, above, regressors, settings["target"], None, list(settings["interval_levels"]),
                        domain, width, feature_names(), gate, settings["gate"]["use"])
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
        composition = features[:, : self.composition_width]
        p_insulator = (self.gate.predict(composition, num_threads=1) if self.gate is not None
                       else np.full(len(features), np.nan))
        # The gate as a hurdle before the hurdle: P(sc) = P(metal) * P(sc | the records' model).
        factor = 1.0 - p_insulator if self.gate is not None and self.gate_use == "multiply" else 1.0
        p_sc = self.superconducting.predict(features, num_threads=1) * factor
        ood = self.domain.score(composition)
        out = pd.DataFrame({"tc_pred_mean": p_sc * if_sc, "tc_pred_std": spread, "tc_p_superconducting": p_sc,
                            "tc_if_superconducting": if_sc, "tc_ood_score": ood, "tc_ood": ood > 1.0,
                            "tc_p_insulator": p_insulator, "tc_insulator": p_insulator > 0.5,
                            "tc_nearest_superconductors": self.domain.nearest_superconductors(composition)})
        for threshold, classifier in self.above.items():
            out[above_column(threshold)] = classifier.predict(features, num_threads=1) * factor
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
        for column in ("tc_ood", "tc_insulator"):
            out[column] = pd.array([pd.NA] * len(table), dtype="boolean")
        out["tc_nearest_superconductors"] = pd.Series([None] * len(table), index=table.index, dtype=object)
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
            np.savez(handle, mean=self.domain.mean, scale=self.domain.scale, reference=self.domain.reference,
                     formulas=self.domain.formulas, tc=self.domain.tc)
        write_json(directory / "model.json", {
            "format": FORMAT, "target": self.target, "features": self.names,
            "composition_width": self.composition_width,
            "domain": {"threshold": self.domain.threshold, "k": self.domain.k},
            "levels": self.levels, "conformal": self.conformal.to_dict(),
            "superconducting": self.superconducting.model_to_string(),
            "above": [{"threshold": t, "booster": b.model_to_string()} for t, b in self.above.items()],
            "regressors": [b.model_to_string() for b in self.regressors],
            "gate": self.gate.model_to_string() if self.gate is not None else None, "gate_use": self.gate_use,
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
                                 meta["domain"]["threshold"], meta["domain"]["k"], arrays["formulas"], arrays["tc"])

        def booster(text: str):
            return lightgbm.Booster(model_str=text)

        return cls(booster(meta["superconducting"]), {float(a["threshold"]): booster(a["booster"]) for a in meta["above"]},
                   [booster(text) for text in meta["regressors"]], meta["target"],
                   NormalisedConformal.from_dict(meta["conformal"]), [float(x) for x in meta["levels"]], domain,
                   meta["composition_width"], meta["features"], booster(meta["gate"]) if meta["gate"] else None,
                   meta["gate_use"])


def _to_target(tc: np.ndarray, target: str) -> np.ndarray:
    return np.log1p(tc) if target == "log1p" else tc


def _from_target(y: np.ndarray, target: str) -> np.ndarray:
    return np.expm1(y) if target == "log1p" else y


def _tree_params(settings: dict, rng: np.random.Generator) -> dict:
    return {"learning_rate": settings["learning_rate"], "num_leaves": settings["num_leaves"],
            "min_data_in_leaf": settings["min_data_in_leaf"], "feature_fraction": settings["feature_fraction"],
            "seed": int(rng.integers(2**31 - 1)), "num_threads": settings["threads"], "verbosity": -1,
            "deterministic": True}


def _train(params: dict, features: np.ndarray, y: np.ndarray, trees: int, weights: np.ndarray | None = None):
    import lightgbm

    return lightgbm.train(params, lightgbm.Dataset(features, y, weight=weights, free_raw_data=True),
                          num_boost_round=trees)


def _classifier(features: np.ndarray, label: np.ndarray, settings: dict, rng: np.random.Generator,
                weights: np.ndarray | None = None):
    if label.all() or not label.any():
        raise ValueError(f"the Tc classifiers need both classes in the training rows; all {len(label)} are "
                         f"{'positive' if label.any() else 'negative'} (add SuperCon, or more records)")
    params = {**_tree_params(settings, rng), "objective": "binary"}
    return _train(params, features, label.astype(float), settings["trees"], weights)


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


NEGATIVE_SOURCE = "dft_insulator"


def family_of(formula: str) -> str:
    """Superconductor family by composition, for the gate's per-family figures."""
    from onnes.data.labels import parse_composition

    composition = parse_composition(formula)
    symbols = {el.symbol for el in composition} if composition is not None else set()
    if {"Cu", "O"} <= symbols:
        return "cuprate"
    if "Fe" in symbols and symbols & {"As", "P", "Se", "Te", "S"}:
        return "iron-based"
    return "other"


def false_positive_rates(predicted: pd.DataFrame, threshold: float) -> dict:
    """Of known non-superconductors: the share called superconducting (P > 0.5) and the
    share with an expected Tc above ``threshold``, with Wilson intervals."""
    from onnes.screen.funnel import wilson_interval

    count = len(predicted)
    called = int((predicted.tc_p_superconducting > 0.5).sum())
    hot = int((predicted.tc_pred_mean > threshold).sum())
    return {"count": count,
            "p_superconducting_above_0.5": called / count if count else float("nan"),
            "p_superconducting_above_0.5_ci95": list(wilson_interval(called, count)),
            f"expected_tc_above_{threshold:g}K": hot / count if count else float("nan"),
            f"expected_tc_above_{threshold:g}K_ci95": list(wilson_interval(hot, count))}


def grouped_masks(table: pd.DataFrame, settings: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(test, calibration) masks: the records' compositions split as without negatives
    (so the superconductor figures stay comparable), the DFT negatives' on their own."""
    records = (table.source != NEGATIVE_SOURCE).to_numpy()
    test, calibration = np.zeros(len(table), bool), np.zeros(len(table), bool)
    groups = table.group[records].reset_index(drop=True)
    test[records] = grouped_split(groups, settings["test_fraction"], seed)
    calibration[records] = grouped_calibration(groups, test[records], settings["calibration_fraction"], seed)
    if (~records).any():
        test[~records] = grouped_split(table.group[~records].reset_index(drop=True), settings["test_fraction"], seed + 2)
    return test, calibration


def evaluate(table: pd.DataFrame, features: np.ndarray, settings: dict, seed: int,
             gate_table: pd.DataFrame | None = None,
             gate_features: np.ndarray | None = None) -> tuple[TcPredictor, dict, pd.DataFrame]:
    """Fit on the grouped training part and score the held-out part: (predictor,
    ``metrics.json``, the held-out records' predictions beside their measured Tc, from
    which the campaign page draws its parity and calibration plots). ``gate_table``
    (group, insulator) with its composition features trains the metallicity gate on the
    compositions outside the test part."""
    dropped_high_pressure = int(table.attrs.get("high_pressure_dropped", 0))
    usable = np.isfinite(features[:, : -len(STRUCTURE_FEATURES)]).all(1)
    if (~usable).any():
        log.warning("Tc predictor: %d rows without composition features left out", int((~usable).sum()))
    table, features = table[usable].reset_index(drop=True), features[usable]
    test, calibration = grouped_masks(table, settings, seed)
    tc = table.tc_K.to_numpy(float)
    negative = (table.source == NEGATIVE_SOURCE).to_numpy()
    weights = np.where(negative, settings["negatives"]["weight"], 1.0)
    gate_data, gate_test = None, None
    if gate_table is not None:
        # Held out: the predictor's test compositions, and a share of the DFT table's own.
        held_out = gate_table.group.isin(set(table.group[test])).to_numpy() | grouped_split(
            gate_table.group, settings["test_fraction"], seed + 3)
        ok = np.isfinite(gate_features).all(1)
        gate_data = (gate_features[ok & ~held_out], gate_table.insulator.to_numpy()[ok & ~held_out])
        gate_test = (gate_features[ok & held_out], gate_table.insulator.to_numpy()[ok & held_out])
    predictor = TcPredictor.fit(features[~test], tc[~test], calibration[~test], settings, seed,
                                table.formula.to_numpy()[~test], weights[~test], gate_data)
    predicted_all = predictor.predict_features(features[test])
    records = ~negative[test]
    predicted = predicted_all[records].reset_index(drop=True)
    truth, source = tc[test][records], table.source.to_numpy()[test][records]
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
    # Known non-superconductors never trained on: DFT band insulators, and the records'
    # measured 0 K compositions (nearly all metals: the hard negatives).
    negatives_held_out = {
        "dft_band_insulators": false_positive_rates(predicted_all[~records], first),
        "measured_non_superconductors": false_positive_rates(predicted[~superconductor], first),
    }
    metrics = {
        "model": "hurdle: classifiers (Tc > 0; Tc > each threshold) + regressor over superconductors",
        "fitted_on": settings["target"],
        **split_counts,
        "label_rule": "a composition with any record above 0 K is superconducting, Tc = median of those records",
        "pressure": {"rule": settings["pressure"], "high_pressure_records_dropped": dropped_high_pressure},
        "negatives": {**settings["negatives"], "rows": int(negative.sum()), "train_rows": int((negative & ~test).sum())},
        "classification": classification,
        "negatives_held_out": negatives_held_out,
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
    if predictor.gate is not None:
        metrics["gate"] = gate_metrics(predictor, predicted, table.formula.to_numpy()[test][records], superconductor,
                                       gate_test, settings)
    held_out = pd.concat([pd.DataFrame({"formula": table.formula.to_numpy()[test][records], "source": source,
                                        "tc_K": truth}), predicted], axis=1)
    return predictor, metrics, held_out


def gate_metrics(predictor: TcPredictor, predicted: pd.DataFrame, formulas: np.ndarray, superconductor: np.ndarray,
                 gate_test: tuple[np.ndarray, np.ndarray], settings: dict) -> dict:
    """How the gate does on held-out compositions: DFT insulators it catches, DFT metals
    it lets through, and held-out superconductors it would call insulators, by family
    (GGA+U gives undoped cuprate parents a gap: the doped ones must pass)."""
    from onnes.screen.funnel import wilson_interval

    features, insulator = gate_test
    verdict = predictor.gate.predict(features, num_threads=1) > 0.5 if len(features) else np.zeros(0, bool)
    out = {"use": predictor.gate_use, "band_gap_min": settings["gate"]["band_gap_min"],
           "held_out_dft_insulators_caught": float(verdict[insulator > 0.5].mean()) if (insulator > 0.5).any() else None,
           "held_out_dft_metals_passed": float((~verdict[insulator < 0.5]).mean()) if (insulator < 0.5).any() else None,
           "held_out_dft_compositions": int(len(insulator))}
    called = predicted.tc_insulator.to_numpy(bool)
    families = pd.Series([family_of(f) for f in formulas])
    rejected = {}
    for family in ("all", "cuprate", "iron-based", "other"):
        mask = superconductor & ((families == family).to_numpy() if family != "all" else True)
        hits, count = int(called[mask].sum()), int(mask.sum())
        rejected[family] = {"count": count, "called_insulator": hits / count if count else None,
                            "ci95": list(wilson_interval(hits, count))}
    out["held_out_superconductors_called_insulator"] = rejected
    return out


def train_and_evaluate(table: pd.DataFrame, settings: dict, seed: int, out_dir: str | Path,
                       dft: pd.DataFrame | None = None) -> dict:
    """``evaluate`` on the table's own features (and the metallicity gate's DFT table,
    when given and enabled); saves the model and ``metrics.json``."""
    cache: dict = {}
    features = feature_matrix(table, cache=cache)
    gate_table, gate_features = None, None
    if dft is not None and settings["gate"]["enabled"]:
        gate_table = metallicity_table(dft, settings["gate"]["band_gap_min"])
        gate_table = at_most(gate_table, settings["gate"]["max_compositions"]).reset_index(drop=True)
        gate_features = composition_features(gate_table.formula, cache=cache)
    predictor, metrics, held_out = evaluate(table, features, settings, seed, gate_table, gate_features)
    predictor.save(out_dir)
    write_json(Path(out_dir) / "metrics.json", metrics)
    with atomic_path(Path(out_dir) / HELD_OUT_FILE) as tmp:
        held_out.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
    return metrics
