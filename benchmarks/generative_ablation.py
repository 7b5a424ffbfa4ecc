"""Ablation of the generative models' settings: train each variant of a configured model
on the same data and budget, sample it, and print the de novo figures that decide
whether compositions are realistic (structural and compositional validity with the
literature's SMACT 2014 set, Wasserstein distances of #elements and density against the
test split), with the hardware.

    python benchmarks/generative_ablation.py --config config/demo.yaml \\
        --data results/demo/data/mp20 --model flow \\
        --variant 'baseline={}' --variant 'types20={"train": {"loss_weights": {"types": 20}}}' \\
        --variant 'masked={"types": "masked"}' --samples 1000 --out results/ablation

A variant is NAME=JSON, deep-merged into the model's config entry; with a key
"weights": OTHER it is not trained but samples the weights of variant OTHER of the same
run with its own sampling settings (a sampling-only ablation). Training budgets are
the entry's `train.steps` unless --steps or --minutes is given (--minutes converts a wall
time into steps from the time difference of a 20-step and a 60-step run of the variant). Run it alone: a second busy
process slows 2-thread torch many times over.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

from onnes import config as cfg  # noqa: E402
from onnes.crystals import read_table  # noqa: E402
from onnes.sampling import sample_shard  # noqa: E402
from onnes.screen.metrics import property_distances  # noqa: E402
from onnes.screen.validity import compositional_validity, structural_validity  # noqa: E402
from onnes.train.loop import train  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition("=")
    return name, json.loads(body or "{}")


def variant_settings(config: dict, model: str, override: dict, steps: int | None, samples: int) -> dict:
    entry = cfg.deep_merge(json.loads(json.dumps(config["models"][model])), override)
    entry["sample"] = {**entry.get("sample", {}), "num_samples": samples, "shards": 1}
    if steps:
        entry["train"] = {**entry.get("train", {}), "steps": steps}
    full = cfg.validate({"models": {model: entry}, "active_models": [model]})
    return full["models"][model]


def steps_for_minutes(settings: dict, model: str, data: Path, out: Path, minutes: float, seed: int) -> int:
    """Steps that fit in ``minutes`` of training: two short runs of 20 and 60 steps,
    whose difference is 40 steps without the data preparation both include."""
    elapsed = []
    for steps in (20, 60):
        probe = json.loads(json.dumps(settings))
        probe["train"].update(steps=steps, log_every=10, val_every=10**6, checkpoint_every=10**6)
        started = time.perf_counter()
        train(probe, model, data / "train.parquet", data / "val.parquet", out / f"probe{steps}", seed)
        elapsed.append(time.perf_counter() - started)
    per_step = max(elapsed[1] - elapsed[0], 1e-3) / 40
    return max(100, int(minutes * 60 / per_step))


def evaluate(samples: pd.DataFrame, test: pd.DataFrame, oxidation_states: str) -> dict:
    struct = structural_validity(samples)
    comp = compositional_validity(samples, oxidation_states)
    valid = samples[struct.valid_struct & comp]
    distances = property_distances(valid, test)
    n_elements = samples.species.map(lambda s: len(set(s)))
    return {"valid_struct": float(struct.valid_struct.mean()), "valid_comp": float(comp.mean()),
            "valid": float((struct.valid_struct & comp).mean()), "mean_elements": float(n_elements.mean()),
            "wdist_num_elements": distances["wdist_num_elements"], "wdist_density": distances["wdist_density"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="curated data set folder with train/val/test.parquet")
    parser.add_argument("--model", required=True, help="model entry of the config to vary")
    parser.add_argument("--variant", action="append", required=True, help="NAME=JSON override")
    parser.add_argument("--steps", type=int, help="training steps (default: the entry's)")
    parser.add_argument("--minutes", type=float, help="training wall time per variant instead of --steps")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("results/ablation"))
    parser.add_argument("--oxidation-states", default="smact14")
    args = parser.parse_args()

    config = cfg.load(args.config)
    test = read_table(args.data / "test.parquet")
    print(hardware())
    print(f"data: {args.data} ({len(read_table(args.data / 'train.parquet'))} train, {len(test)} test); "
          f"{args.samples} samples per variant; torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for text in args.variant:
        name, override = parse_variant(text)
        weights = override.pop("weights", None)
        out = args.out / args.model / name
        out.mkdir(parents=True, exist_ok=True)
        settings = variant_settings(config, args.model, override, args.steps, args.samples)
        train_s = 0.0
        if weights:
            checkpoint = args.out / args.model / weights / "last.ckpt"
            settings["train"]["steps"] = json.loads((checkpoint.parent / "figures.json").read_text())["steps"]
        else:
            checkpoint = out / "last.ckpt"
            if args.minutes:
                steps = steps_for_minutes(settings, args.model, args.data, out, args.minutes, config["seed"])
                settings["train"]["steps"] = steps
            started = time.perf_counter()
            train(settings, args.model, args.data / "train.parquet", args.data / "val.parquet", out, config["seed"])
            train_s = time.perf_counter() - started
        started = time.perf_counter()
        sample_shard(checkpoint, 0, out / "samples.parquet", config["seed"], settings, name=args.model)
        sample_s = time.perf_counter() - started
        figures = evaluate(read_table(out / "samples.parquet"), test, args.oxidation_states)
        row = {"variant": name + (f" (weights of {weights})" if weights else ""),
               "steps": settings["train"]["steps"], "train_s": round(train_s, 1), "sample_s": round(sample_s, 1),
               **{k: (round(v, 3) if v is not None else None) for k, v in figures.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out / "figures.json").write_text(json.dumps({"override": override, "weights": weights, **row}, indent=1))
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
