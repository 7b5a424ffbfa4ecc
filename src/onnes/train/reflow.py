"""Reflow (Liu, Gong & Liu, ICLR 2023, "Flow straight and fast"): distil a flow into a
few-step one.

A trained flow's ODE maps each prior draw x0 to a crystal x1. Flow matching on these
*pairs* (paths from x0 to its own x1, instead of to a random data point) learns a
velocity field whose trajectories are straighter (the pairs' paths cross less), so that
few Euler steps land where many did (their Theorem 3.3: reflow never raises the
transport cost). Here the teacher's ODE draws the pairs (``make_pairs``), a file keeps
them, and training fine-tunes the teacher's weights on them (``PairSet`` gives the loop
batches with their ``Coupling``). Masked types are not straightened: their unmasking
keeps its own corruption, of the teacher's types.

The pairs file holds tensors only (``torch.load(weights_only=True)`` reads it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from onnes.io import atomic_path
from onnes.models.batch import Coupling, CrystalBatch, crystal_index

log = logging.getLogger(__name__)
PER_CRYSTAL = ("num_atoms", "lattice", "lattice0", "lattice1")
PER_ATOM = ("types", "frac", "frac0", "types0")


@dataclass
class PairSet:
    """Teacher pairs, flattened over atoms like a ``CrystalBatch``: per crystal its atom
    count, lattice matrix (for metrics and checks), prior lattice draw and standardised
    endpoint; per atom its type index, coordinates, prior coordinates and (continuous
    types only) prior type draw."""

    tensors: dict[str, torch.Tensor]

    def __post_init__(self):
        num_atoms = self.tensors["num_atoms"]
        self.offsets = torch.cumsum(num_atoms, 0) - num_atoms
        for key in PER_CRYSTAL:
            if len(self.tensors[key]) != len(num_atoms):
                raise ValueError(f"pairs: '{key}' has {len(self.tensors[key])} rows for {len(num_atoms)} crystals")
        for key in PER_ATOM:
            if key in self.tensors and len(self.tensors[key]) != int(num_atoms.sum()):
                raise ValueError(f"pairs: '{key}' has {len(self.tensors[key])} rows for {int(num_atoms.sum())} atoms")

    def __len__(self) -> int:
        return len(self.tensors["num_atoms"])

    @classmethod
    def from_batches(cls, batches: list[tuple[CrystalBatch, Coupling]]) -> "PairSet":
        columns: dict[str, list[torch.Tensor]] = {}
        for batch, coupling in batches:
            parts = {"num_atoms": batch.num_atoms, "lattice": batch.lattice, "types": batch.types,
                     "frac": batch.frac, "lattice0": coupling.lattice0, "lattice1": coupling.lattice1,
                     "frac0": coupling.frac0}
            if coupling.types0 is not None:
                parts["types0"] = coupling.types0
            for key, value in parts.items():
                columns.setdefault(key, []).append(value.detach().cpu())
        return cls({key: torch.cat(values) for key, values in columns.items()})

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.tensors, tmp)

    @classmethod
    def load(cls, path: str | Path) -> "PairSet":
        tensors = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in (*PER_CRYSTAL, *PER_ATOM[:3]) if k not in tensors]
        if missing:
            raise ValueError(f"{path}: not a reflow pairs file (missing {missing})")
        return cls(tensors)

    def subset(self, indices) -> "PairSet":
        """The pairs ``indices`` (crystal order kept)."""
        indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        atoms = self._atom_rows(indices)
        return PairSet({k: v[indices] if k in PER_CRYSTAL else v[atoms] for k, v in self.tensors.items()})

    def _atom_rows(self, indices: torch.Tensor) -> torch.Tensor:
        counts = self.tensors["num_atoms"][indices]
        starts = torch.repeat_interleave(self.offsets[indices], counts)
        local = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        return starts + local

    def batch(self, indices, vocabulary=None) -> tuple[CrystalBatch, Coupling]:
        """The crystals ``indices`` as a training batch and the base points of their paths
        (``vocabulary`` unused: pairs hold the teacher's type indices already)."""
        part = self.subset(indices).tensors
        num_atoms = part["num_atoms"]
        batch = CrystalBatch(part["types"], part["frac"], part["lattice"], num_atoms, crystal_index(num_atoms))
        return batch, Coupling(part["lattice0"], part["frac0"], part["lattice1"], part.get("types0"))


def with_data(batch: CrystalBatch, coupling: Coupling, data: CrystalBatch) -> tuple[CrystalBatch, Coupling]:
    """A batch of pairs followed by crystals of the data set, the latter unpaired (NaN
    base points and endpoint: they train on paths from fresh prior draws, as the
    source did)."""
    num_atoms = torch.cat([batch.num_atoms, data.num_atoms])
    joined = CrystalBatch(torch.cat([batch.types, data.types]), torch.cat([batch.frac, data.frac]),
                          torch.cat([batch.lattice, data.lattice]), num_atoms, crystal_index(num_atoms))

    def unpaired(paired: torch.Tensor, rows: int) -> torch.Tensor:
        return torch.cat([paired, paired.new_full((rows, *paired.shape[1:]), float("nan"))])

    crystals, atoms = data.num_crystals, len(data.types)
    return joined, Coupling(unpaired(coupling.lattice0, crystals), unpaired(coupling.frac0, atoms),
                            unpaired(coupling.lattice1, crystals),
                            None if coupling.types0 is None else unpaired(coupling.types0, atoms))


def make_pairs(model, plan, num_atoms: np.ndarray, batch_size: int, gen: torch.Generator,
               device: torch.device, label: str = "reflow pairs") -> PairSet:
    """Integrate the teacher ``model`` along ``plan`` (a ``SamplingPlan``: its ODE) from
    fresh prior draws, for crystals of ``num_atoms`` atoms."""
    sampler, steps = model.sampler(plan), plan.steps
    batches, started = [], time.perf_counter()
    for start in tqdm(range(0, len(num_atoms), batch_size), desc=label, mininterval=5):
        sizes = torch.as_tensor(num_atoms[start:start + batch_size], device=device)
        batches.append(model.teacher_pairs(sizes, steps, gen, sampler))
    pairs = PairSet.from_batches(batches)
    seconds = time.perf_counter() - started
    log.info("%s: %d pairs at %d teacher steps in %.1f s (%.1f pairs/s)", label, len(pairs), steps, seconds,
             len(pairs) / max(seconds, 1e-9))
    return pairs

