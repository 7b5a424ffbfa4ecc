"""The training set of a reward fine-tune: a source model's samples, resampled in
proportion to their reward (reward-weighted fine-tuning; Peters & Schaal, ICML 2007;
for generative models, RAFT: Dong et al., TMLR 2023).

Reward (``reward.kind``): the Tc predictor's P(Tc > threshold); or confirmed stability,
1 for a sample the confirming MLIP kept as metastable, unique and novel (self-training on
the campaign's confirmed candidates); or their product. Gated by what a campaign needs of a
candidate: structurally and compositionally valid, unique, inside the predictor's
domain, not relaxed to above the hull margin (relaxed samples train in their relaxed
geometry, which the screened table's crystal columns hold; samples rejected early earn
nothing), and not refused by the confirming MLIP where it relaxed them. Drawing samples x ~ p_model with weight P(Tc > T | x)^(1/beta)
targets p_model(x) P(Tc > T | x)^(1/beta): at beta = 1 the model's own distribution
conditioned on Tc above T, the distribution classifier guidance aims at. Resampling with
replacement gives a table that the ordinary training loop fits without per-row weights.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from onnes.crystals import REQUIRED_COLUMNS
from onnes.tc.predictor import above_column, flag, in_domain


def uses_tc(settings: dict) -> bool:
    return settings["kind"] in ("tc", "tc_and_stability")


def rewarded(predicted: pd.DataFrame, settings: dict) -> tuple[pd.Series, dict]:
    """Boolean mask of the rows that pass the gates (and so are weighted by their
    reward), and the count left after each gate."""
    gates = {"valid": flag(predicted, "valid"), "unique": flag(predicted, "unique")}
    if uses_tc(settings):
        column = above_column(settings["threshold"])
        if column not in predicted:
            raise ValueError(f"the predictions have no {column}: the Tc predictor has no classifier at "
                             f"{settings['threshold']:g} K (tc.predictor.thresholds)")
        gates["in_domain"] = in_domain(predicted)
    relaxed = flag(predicted, "relaxed")
    above_hull = pd.to_numeric(predicted["e_above_hull"], errors="coerce") > settings["max_e_above_hull"]
    rejected = predicted["relax_status"].eq("rejected_early") if "relax_status" in predicted else False
    gates["hull"] = ~(relaxed & (above_hull.fillna(False) | rejected))
    # a sample the confirming MLIP took and did not confirm earns nothing either
    if "confirm_relax_status" in predicted:
        gates["confirmed"] = ~(predicted["confirm_relax_status"].notna() & ~flag(predicted, "msun_confirmed"))
    mask = pd.Series(True, index=predicted.index)
    counts = {"generated": int(len(predicted))}
    for name, gate in gates.items():
        mask &= gate
        counts[name] = int(mask.sum())
    counts["relaxed_among_rewarded"] = int((mask & relaxed).sum())
    return mask, counts


def reward_of(gated: pd.DataFrame, settings: dict) -> np.ndarray:
    """Each gated sample's reward (``reward.kind``): P(Tc > threshold); 1 for a confirmed
    MSUN crystal and 0 otherwise (self-training on what the confirming MLIP kept, as the
    self-training "flywheel" rounds of generative crystal models do); or their product."""
    confirmed = flag(gated, "msun_confirmed").to_numpy(float)
    if settings["kind"] == "stability":
        return confirmed
    probability = pd.to_numeric(gated[above_column(settings["threshold"])], errors="coerce").fillna(0.0).to_numpy()
    return probability * confirmed if settings["kind"] == "tc_and_stability" else probability


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 of importance weights."""
    total = weights.sum()
    return float(total * total / (weights * weights).sum()) if total > 0 else 0.0


def tempered_weights(probability: np.ndarray, temperature: float, min_effective: float) -> tuple[np.ndarray, float]:
    """Weights P^(1/T) at the configured T, or at the smallest T above it whose Kish
    effective sample size reaches ``min_effective`` (adaptive tempering with an ESS
    criterion, as in sequential Monte Carlo: Jasra et al., Scand. J. Stat. 2011). A pool
    with fewer usable samples than ``min_effective`` is an error."""
    if (probability > 0).sum() < min_effective:
        raise ValueError(f"only {(probability > 0).sum()} gated samples have a reward above 0; "
                         f"reward.min_effective_samples is {min_effective:g}")

    def ess(t: float) -> float:
        return effective_sample_size(probability ** (1.0 / t))

    if ess(temperature) >= min_effective:
        return probability ** (1.0 / temperature), temperature
    low, high = np.log(temperature), np.log(temperature) + 1.0
    while ess(np.exp(high)) < min_effective:  # flattening always helps: ESS -> count as T -> inf
        low, high = high, high + 1.0
    for _ in range(40):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if ess(np.exp(middle)) < min_effective else (low, middle)
    return probability ** np.exp(-high), float(np.exp(high))


def reward_set(predicted: pd.DataFrame, settings: dict, seed: int,
               data: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(train, val, summary): gated samples drawn with replacement in proportion to their
    weight; validation rows are distinct samples never drawn for training. With
    ``reward.mix_data`` > 0 that fraction of the training draws comes uniformly from
    ``data`` (the entry's training split) instead."""
    mask, counts = rewarded(predicted, settings)
    gated = predicted[mask].reset_index(drop=True)
    reward = reward_of(gated, settings)
    try:
        weights, temperature = tempered_weights(reward, settings["temperature"], settings["min_effective_samples"])
    except ValueError as error:
        raise ValueError(f"{error}; sample more from the source, or lower reward.threshold. "
                         f"Counts after each gate: {counts}") from None
    ess = effective_sample_size(weights)
    column = above_column(settings["threshold"])
    keep = [c for c in (*REQUIRED_COLUMNS, "formula", "num_sites", column, "tc_pred_mean", "e_above_hull", "relaxed",
                        "msun_confirmed") if c in gated]
    gated = gated[keep].assign(reward=reward)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(gated))
    n_val = max(1, int(round(settings["val_fraction"] * len(gated))))
    val_rows, train_rows = order[:n_val], order[n_val:]
    if weights[train_rows].sum() <= 0:
        raise ValueError(f"every rewarded sample ({int((weights > 0).sum())}) fell into the validation rows; "
                         "sample more from the source or lower reward.val_fraction")
    size = settings["draws"] or len(train_rows)
    n_data = int(round(settings["mix_data"] * size))
    if n_data and data is None:
        raise ValueError("reward.mix_data > 0 needs the training split to mix in (--data)")
    p = weights[train_rows] / weights[train_rows].sum()
    drawn = rng.choice(train_rows, size=size - n_data, replace=True, p=p)
    # Validation is weighted the same way, drawn from its own rows.
    val_p = weights[val_rows] / weights[val_rows].sum() if weights[val_rows].sum() > 0 else None
    val = gated.iloc[rng.choice(val_rows, size=max(1, int(round(settings["val_fraction"] * size))), p=val_p)]
    train = gated.iloc[drawn].copy()
    # Repeated draws of one sample need ids of their own in a crystal table.
    train["id"] = [f"{i}~{k}" for k, i in enumerate(train.id)]
    if n_data:
        known = data.iloc[rng.integers(0, len(data), size=n_data)][list(REQUIRED_COLUMNS)].copy()
        known["id"] = [f"{i}~data{k}" for k, i in enumerate(known.id)]
        train = pd.concat([train, known], ignore_index=True)
    val = val.copy()
    val["id"] = [f"{i}~{k}" for k, i in enumerate(val.id)]
    generated = train.iloc[:len(drawn)]
    summary = {"counts_after_gates": counts, "effective_sample_size": ess, "temperature_used": temperature,
               "distinct_in_train": int(len(set(drawn))), "train": int(len(train)), "val": int(len(val)),
               "from_data": n_data, "mean_reward_gated": float(reward.mean()),
               "mean_reward_drawn": float(generated.reward.mean()), **settings}
    if column in gated:
        summary.update(mean_probability_gated=float(gated[column].mean()),
                       mean_probability_drawn=float(generated[column].mean()))
    return train.reset_index(drop=True), val.reset_index(drop=True), summary
