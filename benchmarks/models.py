"""Benchmark: training steps/s and sampling structures/s of each family; prints a table
with the hardware. CPU always; the GPU too when one is visible.

    python benchmarks/models.py --train results/demo/data/mp20/train.parquet \\
        [--hidden 64 --layers 3 --batch 32 --train-steps 50 --samples 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

from onnes.config import validate  # noqa: E402
from onnes.crystals import read_table  # noqa: E402
from onnes.models.batch import CrystalDataset, Vocabulary  # noqa: E402
from onnes.models.lattice import LatticeNormalizer, params_from_matrix  # noqa: E402
from onnes.models.model import GenerativeModel, count_parameters  # noqa: E402

FAMILIES = {
    "flow": {"family": "flow"},
    "diffusion": {"family": "diffusion"},
    "interpolant": {"family": "interpolant", "interpolant": {"kind": "trig", "gamma": "bridge"},
                    "sample": {"sampler": "sde", "noise": 0.05}},
    # KLDM at diffusion's network evaluations: twice its predictor steps, no corrector.
    "kldm": {"family": "kldm", "sample": {"sampler": "sde", "corrector_steps": 0}},
}


def settings_for(entry: dict, args) -> dict:
    entry = {**entry, "denoiser": {"hidden": args.hidden, "layers": args.layers},
             "train": {"batch_size": args.batch}}
    entry.setdefault("sample", {})
    steps = {"diffusion": args.diffusion_steps, "kldm": 2 * args.diffusion_steps}.get(entry["family"], args.ode_steps)
    entry["sample"] = {**entry["sample"], "steps": steps}
    return validate({"models": {"m": entry}})["models"]["m"]


def training_data(path: Path):
    """(dataset, vocabulary, lattice normaliser) of a crystal table of cells <= 20 atoms."""
    dataset = CrystalDataset.from_table(read_table(path), max_atoms=20)
    vocabulary = Vocabulary(np.concatenate(dataset.species))
    num_atoms = torch.tensor([len(s) for s in dataset.species])
    normalizer = LatticeNormalizer.fit(params_from_matrix(torch.from_numpy(dataset.lattice).float(), num_atoms))
    return dataset, vocabulary, normalizer


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(device: torch.device, dataset, vocabulary, normalizer, args) -> list[tuple]:
    rows = []
    for name, entry in FAMILIES.items():
        settings = settings_for(entry, args)
        model = GenerativeModel(settings, len(vocabulary), normalizer).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        rng = np.random.default_rng(0)
        use_bf16 = device.type == "cuda"
        timings = []
        for step in range(args.train_steps + 3):
            batch = dataset.batch(rng.choice(len(dataset), args.batch, replace=False), vocabulary).to(device)
            sync(device)
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                loss, _ = model.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sync(device)
            if step >= 3:  # warm-up excluded
                timings.append(time.perf_counter() - t0)
        plan = model.sampling_plan()
        steps = plan.steps
        sizes = torch.as_tensor(rng.choice([len(s) for s in dataset.species], args.samples), device=device)
        model.eval()
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            model.sample(sizes, steps, torch.Generator(device=device).manual_seed(0))
        sync(device)
        seconds = time.perf_counter() - t0
        evals = model.sampler(plan).evaluations(steps)
        rows.append((name, device.type, count_parameters(model), args.batch, 1 / np.mean(timings), steps, evals,
                     args.samples / seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="a crystal table (e.g. a train split)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--ode-steps", type=int, default=50)
    parser.add_argument("--diffusion-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset, vocabulary, normalizer = training_data(args.train)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = [row for device in devices for row in run(device, dataset, vocabulary, normalizer.to(device), args)]
    gpu = f"; GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(f"hardware: {hardware()}{gpu}; torch {torch.__version__}, {args.threads} CPU threads; "
          f"denoiser {args.hidden}x{args.layers}; MP-20 cells (<= 20 atoms)")
    print("| family | device | parameters | batch | train steps/s | sampling steps | network evals | structures/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, device, params, batch, sps, steps, evals, rate in rows:
        print(f"| {name} | {device} | {params:,} | {batch} | {sps:.1f} | {steps} | {evals} | {rate:.1f} |")


if __name__ == "__main__":
    main()
