"""Deterministic, seeded train/val/test splits, by structure or by reduced formula."""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def split_seed(seed: int, dataset: str) -> np.random.Generator:
    """One generator per (campaign seed, data set), stable across Python runs."""
    return np.random.default_rng([seed, zlib.crc32(dataset.encode())])


def assign_splits(
    keys: Sequence[str], fractions: dict[str, float], rng: np.random.Generator
) -> np.ndarray:
    """Assign each row a split; rows sharing a key always share a split.

    Unique keys are sorted (so row order does not matter), shuffled with ``rng``, and
    walked in that order, filling train, then val, then test up to their fractions of
    the row count.
    """
    keys = pd.Series(list(keys), dtype=object)
    counts = keys.value_counts(sort=False)
    unique = np.array(sorted(counts.index))
    order = rng.permutation(len(unique))
    sizes = counts.reindex(unique[order]).to_numpy()
    cumulative_before = np.cumsum(sizes) - sizes
    total = sizes.sum()
    bounds = np.cumsum([fractions[s] for s in SPLITS]) * total
    which = np.searchsorted(bounds[:-1], cumulative_before, side="right")
    by_key = dict(zip(unique[order], np.array(SPLITS, dtype=object)[which]))
    return keys.map(by_key).to_numpy()


def split_table(
    table: pd.DataFrame, by: str, fractions: dict[str, float], seed: int, dataset: str
) -> dict[str, pd.DataFrame]:
    if by == "structure":
        keys = table["id"]
    elif by == "formula":
        keys = table["composition_key"] if "composition_key" in table else table["formula"]
    else:
        raise ValueError(f"split_by must be 'structure' or 'formula', got '{by}'")
    labels = assign_splits(keys.astype(str), fractions, split_seed(seed, dataset))
    out = table.assign(split=labels)
    return {name: out[out.split == name].reset_index(drop=True) for name in SPLITS}
