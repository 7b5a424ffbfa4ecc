"""Normalised split-conformal intervals for a regressor with a spread.

Nonconformity score r = |y - mu| / (sigma + c) on a calibration set the regressor never
saw (Papadopoulos et al. 2008; Lei et al., JASA 2018, section 5.2): sigma is the
ensemble spread, so intervals widen where the members disagree, and the offset c (the
median calibration spread) keeps a near-zero spread from giving a zero-width interval.
For n calibration scores, the level-(1 - a) interval is mu +- q (sigma + c) with q the
ceil((n + 1)(1 - a))-th smallest score: marginal coverage >= 1 - a for exchangeable rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def level_key(level: float) -> str:
    """'68' for 0.68: the suffix of interval columns and metric keys."""
    return f"{round(100 * level):d}"


@dataclass
class NormalisedConformal:
    offset: float
    quantiles: dict[str, float]  # level_key -> score quantile (inf when too few rows)
    calibration_rows: int

    @classmethod
    def calibrate(cls, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, levels: list[float]) -> "NormalisedConformal":
        if len(y) == 0:
            raise ValueError("conformal calibration needs at least one calibration row")
        offset = max(float(np.median(sigma)), 1e-6)
        scores = np.sort(np.abs(y - mu) / (sigma + offset))
        quantiles = {}
        for level in levels:
            rank = math.ceil((len(scores) + 1) * level)
            quantiles[level_key(level)] = float(scores[rank - 1]) if rank <= len(scores) else math.inf
        return cls(offset, quantiles, len(scores))

    def interval(self, mu: np.ndarray, sigma: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        half = self.quantiles[level_key(level)] * (sigma + self.offset)
        return mu - half, mu + half

    def to_dict(self) -> dict:
        return {"offset": self.offset, "quantiles": self.quantiles, "calibration_rows": self.calibration_rows}

    @classmethod
    def from_dict(cls, data: dict) -> "NormalisedConformal":
        return cls(float(data["offset"]), {k: float(v) for k, v in data["quantiles"].items()},
                   int(data["calibration_rows"]))
