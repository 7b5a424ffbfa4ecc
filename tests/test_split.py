"""Splits are deterministic, seeded, order-independent, and group by formula on request."""

import numpy as np
import pandas as pd

from onnes.data.split import split_table


def table(n=500, seed=1):
    rng = np.random.default_rng(seed)
    formulas = [f"F{int(k)}" for k in rng.integers(0, 120, n)]
    return pd.DataFrame({"id": [f"id-{i}" for i in range(n)], "formula": formulas})


FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def ids(parts):
    return {name: set(part.id) for name, part in parts.items()}


def test_same_seed_same_split_whatever_the_row_order():
    t = table()
    first = ids(split_table(t, "structure", FRACTIONS, seed=7, dataset="mp20"))
    shuffled = t.sample(frac=1.0, random_state=3)
    assert ids(split_table(shuffled, "structure", FRACTIONS, seed=7, dataset="mp20")) == first


def test_other_seed_or_dataset_gives_another_split():
    t = table()
    base = ids(split_table(t, "structure", FRACTIONS, seed=7, dataset="mp20"))
    assert ids(split_table(t, "structure", FRACTIONS, seed=8, dataset="mp20")) != base
    assert ids(split_table(t, "structure", FRACTIONS, seed=7, dataset="wbm")) != base


def test_fractions_and_partition():
    t = table(1000)
    parts = split_table(t, "structure", FRACTIONS, seed=0, dataset="x")
    sizes = {k: len(v) for k, v in parts.items()}
    assert sizes == {"train": 800, "val": 100, "test": 100}
    assert set().union(*ids(parts).values()) == set(t.id)


def test_formula_split_keeps_polymorphs_together():
    t = table(800)
    parts = split_table(t, "formula", FRACTIONS, seed=0, dataset="3dsc")
    formulas = {k: set(v.formula) for k, v in parts.items()}
    assert not formulas["train"] & formulas["val"]
    assert not formulas["train"] & formulas["test"]
    assert not formulas["val"] & formulas["test"]
    assert 0.7 < len(parts["train"]) / len(t) < 0.9
