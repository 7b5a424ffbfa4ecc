"""Tiny training sets built from hand-made crystals (no data mirror needed)."""

from __future__ import annotations

import numpy as np
from conftest import perovskite, rocksalt, silicon
from pymatgen.core import Lattice, Structure

from onnes import crystals
from onnes.config import validate


def toy_structures(count: int, seed: int = 0) -> list[Structure]:
    rng = np.random.default_rng(seed)
    makers = [rocksalt, silicon, perovskite,
              lambda: Structure(Lattice.hexagonal(3.1, 3.5), ["Mg", "B", "B"],
                                [[0, 0, 0], [1 / 3, 2 / 3, 0.5], [2 / 3, 1 / 3, 0.5]])]
    out = []
    for k in range(count):
        s = makers[k % len(makers)]().copy()
        for i in range(len(s)):
            s.translate_sites([i], rng.normal(0, 0.05, 3), frac_coords=False)
        s.scale_lattice(s.volume * rng.uniform(0.95, 1.05))
        out.append(s)
    return out


def write_toy_splits(directory, train: int = 48, val: int = 16):
    paths = {}
    for name, count, seed in (("train", train, 0), ("val", val, 1)):
        table = crystals.from_structures(toy_structures(count, seed), [f"{name}-{i}" for i in range(count)], "toy")
        table["tc_K"] = np.linspace(0, 30, count)
        paths[name] = directory / f"{name}.parquet"
        crystals.write_table(table, paths[name])
    return paths


def model_settings(family: str = "flow", **overrides) -> dict:
    entry = {
        "family": family,
        "denoiser": {"hidden": 32, "layers": 2, "fourier": 4, "time_dim": 16},
        "train": {"steps": 12, "batch_size": 8, "warmup_steps": 2, "log_every": 2, "val_every": 4,
                  "checkpoint_every": 4, "val_batches": 2, "threads": 1},
        "sample": {"num_samples": 12, "shards": 2, "batch_size": 5, "steps": 6, "threads": 1},
    }
    for key, value in overrides.items():
        entry[key] = {**entry.get(key, {}), **value} if isinstance(value, dict) else value
    return validate({"models": {"m": entry}})["models"]["m"]
