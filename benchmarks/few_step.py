"""Quality against sampling budget: sample trained checkpoints at several numbers of
network evaluations (NFE) and sampler choices, and print the de novo figures that need
no relaxation (structural and compositional validity with Wilson intervals,
Wasserstein distances of #elements and density against the test split) with the
throughput, beside the checkpoint's own (preset) sampler. A first look for few-step
sampling (issue #34); coverage, MSUN and CSP need the campaign's screening.

    python benchmarks/few_step.py --config config/quality.yaml --results results/quality \\
        --models flow interpolant --nfe 4 8 16 32 100 --samples 1000 --out docs/results/few_step

Each (model, sampler, NFE) samples ``--samples`` structures in one shard with the same
seed; Euler and Euler-Maruyama take NFE steps, Heun (NFE + 1) / 2 steps. Run it alone:
a second busy process slows torch many times over.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

from onnes import config as cfg  # noqa: E402
from onnes.crystals import read_table  # noqa: E402
from onnes.models.families import SamplingPlan  # noqa: E402
from onnes.sampling import load_model, sample_shard  # noqa: E402
from onnes.screen.funnel import wilson_interval  # noqa: E402
from onnes.screen.metrics import property_distances  # noqa: E402
from onnes.screen.validity import compositional_validity, structural_validity  # noqa: E402

# Sampler variants: (name, sample-block override, steps for a budget of nfe evaluations).
VARIANTS = {
    "euler": ({"sampler": "ode", "heun": False, "corrector_steps": 0}, lambda nfe: nfe),
    "heun": ({"sampler": "ode", "heun": True, "corrector_steps": 0}, lambda nfe: (nfe + 1) // 2),
    "sde": ({"sampler": "sde", "heun": False, "corrector_steps": 0}, lambda nfe: nfe),
}


def rate(successes: int, trials: int) -> str:
    low, high = wilson_interval(successes, trials)
    return f"{successes / trials:.3f} [{low:.3f}-{high:.3f}]"


def figures(samples: pd.DataFrame, test: pd.DataFrame, oxidation_states: str) -> dict:
    struct = structural_validity(samples).valid_struct.to_numpy(bool)
    comp = compositional_validity(samples, oxidation_states).to_numpy(bool)
    valid = samples[struct & comp]
    distances = property_distances(valid, test)
    n = len(samples)
    return {"struct. valid": rate(int(struct.sum()), n), "comp. valid": rate(int(comp.sum()), n),
            "valid": rate(int((struct & comp).sum()), n), "W(#elements)": f"{distances['wdist_num_elements']:.3f}",
            "W(density)": f"{distances['wdist_density']:.3f}"}


def run(config: dict, results: Path, model: str, variant: str, nfe: int | None, samples: int, out: Path,
        test: pd.DataFrame, oxidation_states: str, seed: int) -> dict:
    entry = json.loads(json.dumps(config["models"][model]))
    sample = {**entry["sample"], "num_samples": samples, "shards": 1}
    label = "preset"
    if nfe is not None:
        override, steps_of = VARIANTS[variant]
        sample.update(override, steps=steps_of(nfe))
        label = variant
    entry["sample"] = sample
    entry = cfg.validate({"models": {model: entry}, "active_models": [model]})["models"][model]
    path = out / f"{model}_{label}_{nfe or 'preset'}.parquet"
    started = time.perf_counter()
    summary = sample_shard(results / f"models/{model}/last.ckpt", 0, path, seed=seed, settings=entry, name=model)
    seconds = time.perf_counter() - started
    plan = SamplingPlan.of(entry["family"], entry["sample"])
    network, _ = load_model(results / f"models/{model}/last.ckpt")
    evaluations = network.sampler(plan).evaluations(plan.steps)
    return {"model": model, "sampler": label if nfe is not None else f"preset ({plan.sampler}, {plan.steps} steps)",
            "NFE": evaluations, "structures/s": f"{summary['count'] / seconds:.1f}",
            **figures(read_table(path), test, oxidation_states)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True, help="results/{campaign} with models/*/last.ckpt")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 8, 16, 32, 100])
    parser.add_argument("--variants", nargs="+", default=["euler", "heun"], choices=sorted(VARIANTS))
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--test", type=Path, help="test split (default: the first model's data set's)")
    parser.add_argument("--oxidation-states", default="smact14")
    parser.add_argument("--out", type=Path, default=Path("results/few_step"))
    args = parser.parse_args()

    config = cfg.load(args.config)
    dataset = config["models"][args.models[0]]["dataset"]
    test = read_table(args.test or args.results / f"data/{dataset}/test.parquet")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models:
        rows.append(run(config, args.results, model, "", None, args.samples, args.out, test,
                        args.oxidation_states, config["seed"]))
        print(rows[-1], flush=True)
        for variant in args.variants:
            for nfe in args.nfe:
                rows.append(run(config, args.results, model, variant, nfe, args.samples, args.out, test,
                                args.oxidation_states, config["seed"]))
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "few_step.csv", index=False)
    print(json.dumps(hardware()))
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
