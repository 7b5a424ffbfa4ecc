"""Quality against sampling budget: sample trained checkpoints at several numbers of
network evaluations (NFE) and sampler choices, and print the de novo figures that need
no relaxation (structural and compositional validity with Wilson intervals,
Wasserstein distances of #elements and density against the test split) with the
throughput, beside the checkpoint's own (preset) sampler; with ``--fingerprints`` also
CDVAE coverage (COV-R/P, about 3 structures/s to fingerprint on one core), with ``--csp
N`` the DiffCSP match rate of N structure predictions on test compositions by the same
sampler. MSUN needs the campaign's screening (config/few_step.yaml).

    python benchmarks/few_step.py --config config/quality.yaml --results results/quality \\
        --models flow interpolant --nfe 4 8 16 32 100 --samples 1000 --out docs/results/few_step

``--preset-samples results/quality/samples`` scores the preset row on the campaign's own
samples instead of drawing them again (no throughput then). Variant ``own`` is the
preset's sampler (its corrector moves included) on a shorter grid.

Each (model, sampler, NFE, grid power) samples ``--samples`` structures in one shard with
the same seed; Euler, DDIM and Euler-Maruyama take NFE steps, Heun (NFE + 1) / 2 steps;
``--grid-powers`` adds rows on non-uniform time grids (``sample.grid_power``). Run it
alone: a second busy process slows torch many times over.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

from onnes import config as cfg  # noqa: E402
from onnes.crystals import read_table  # noqa: E402
from onnes.graph import CampaignGraph  # noqa: E402
from onnes.models.families import SamplingPlan  # noqa: E402
from onnes.sampling import load_model, sample_csp, sample_shard  # noqa: E402
from onnes.screen.funnel import wilson_interval  # noqa: E402
from onnes.io import read_parquet  # noqa: E402
from onnes.screen.metrics import coverage, csp_match, fingerprints, property_distances  # noqa: E402
from onnes.screen.validity import compositional_validity, structural_validity  # noqa: E402

# Sampler variants: (sample-block override, steps for a budget of nfe evaluations given
# the preset's sample block). "own" is the preset's sampler itself on a shorter grid (a
# corrector move costs one evaluation, for the processes that have a corrector).
VARIANTS = {
    "own": ({}, None),  # as many steps as nfe buys at the preset sampler's evaluations per step
    "euler": ({"sampler": "ode", "heun": False, "corrector_steps": 0}, lambda nfe, sample: nfe),
    "heun": ({"sampler": "ode", "heun": True, "corrector_steps": 0}, lambda nfe, sample: (nfe + 1) // 2),
    # Euler with DDIM's deterministic step for the diffusion processes (sample.ddim).
    "ddim": ({"sampler": "ode", "heun": False, "corrector_steps": 0, "ddim": True}, lambda nfe, sample: nfe),
    "sde": ({"sampler": "sde", "heun": False, "corrector_steps": 0}, lambda nfe, sample: nfe),
}


def rate(successes: int, trials: int) -> str:
    low, high = wilson_interval(successes, trials)
    return f"{successes / trials:.3f} [{low:.3f}-{high:.3f}]"


def distance(distances: dict, key: str) -> str:
    low, high = distances[f"{key}_ci95"]
    return f"{distances[key]:.3f} [{low:.3f}-{high:.3f}]"


def figures(samples: pd.DataFrame, test: pd.DataFrame, oxidation_states: str,
            reference_fp: pd.DataFrame | None = None, workers: int = 1) -> dict:
    struct = structural_validity(samples).valid_struct.to_numpy(bool)
    comp = compositional_validity(samples, oxidation_states).to_numpy(bool)
    valid = samples[struct & comp]
    distances = property_distances(valid, test)
    n = len(samples)
    row = {"struct. valid": rate(int(struct.sum()), n), "comp. valid": rate(int(comp.sum()), n),
           "valid": rate(int((struct & comp).sum()), n),
           "W(#elements)": distance(distances, "wdist_num_elements"),
           "W(density)": distance(distances, "wdist_density")}
    if reference_fp is not None:  # CDVAE coverage over every generated structure, the campaign's cutoffs
        cov = coverage(fingerprints(samples, workers), reference_fp)
        row["COV-R / COV-P"] = f"{cov['cov_recall']:.3f} / {cov['cov_precision']:.3f}"
        row["COV-R structure / composition"] = (f"{cov['cov_recall_structure']:.3f} / "
                                                f"{cov['cov_recall_composition']:.3f}")
    return row


def match_figures(predicted: pd.DataFrame, test: pd.DataFrame) -> dict:
    """DiffCSP match rate (Wilson interval) and RMSE, by the campaign's ``csp_match``."""
    match = csp_match(predicted, test)
    matched = round(match["csp_match_rate"] * match["csp_count"])
    rmse = "" if match["csp_rmse"] is None else f"{match['csp_rmse']:.3f}"
    return {"CSP match": rate(matched, match["csp_count"]), "CSP RMSE": rmse}


def linked_entries(config: dict, model: str) -> dict:
    """A copy of the model's entry and of every entry it links to (a distilled model's
    source), so that it validates on its own."""
    return json.loads(json.dumps(CampaignGraph(config).linked_entries(model)))


def run(config: dict, results: Path, model: str, variant: str, nfe: int | None, samples: int, out: Path,
        score, seed: int, grid_power: float = 1.0, csp: tuple[pd.DataFrame, int] | None = None,
        overrides: dict | None = None) -> dict:
    entry = json.loads(json.dumps(config["models"][model]))
    sample = {**entry["sample"], "num_samples": samples, "shards": 1}
    if grid_power != 1.0:
        sample["grid_power"] = grid_power
    sample.update(overrides or {})
    label = "preset"
    network, _ = load_model(results / f"models/{model}/last.ckpt")
    if nfe is not None:
        override, steps_of = VARIANTS[variant]
        sample.update(override)
        if steps_of is None:
            sampler = network.sampler(SamplingPlan.of(entry["family"], {**sample, "steps": 2}))
            steps = max(1, nfe // (sampler.evaluations(2) - sampler.evaluations(1)))
        else:
            steps = steps_of(nfe, sample)
        sample["steps"] = steps
        label = variant
    entry["sample"] = sample
    entry = cfg.validate({"models": {**linked_entries(config, model), model: entry},
                          "active_models": [model]})["models"][model]
    stem = (f"{model}_{label}_{nfe or 'preset'}" + (f"_p{grid_power:g}" if grid_power != 1.0 else "")
            + "".join(f"_{key}{value}" for key, value in (overrides or {}).items()))
    path = out / f"{stem}.parquet"
    checkpoint = results / f"models/{model}/last.ckpt"
    started = time.perf_counter()
    summary = sample_shard(checkpoint, 0, path, seed=seed, settings=entry, name=model)
    seconds = time.perf_counter() - started
    plan = SamplingPlan.of(entry["family"], entry["sample"])
    evaluations = network.sampler(plan).evaluations(plan.steps)
    return {"model": model, "sampler": label if nfe is not None else f"preset ({plan.sampler}, {plan.steps} steps)",
            "grid power": grid_power, "settings": " ".join(f"{k}={v}" for k, v in (overrides or {}).items()),
            "NFE": evaluations, "structures/s": f"{summary['count'] / seconds:.1f}",
            **score(read_table(path)),
            **(match_figures(sample_csp(checkpoint, csp[0], csp[1], out / f"{stem}_csp.parquet", seed,
                                        settings=entry, name=model), csp[0]) if csp else {})}


def campaign_row(config: dict, results: Path, model: str, samples: Path, score,
                 csp: tuple[pd.DataFrame, int] | None = None) -> dict:
    """The preset's row from the campaign's own samples (``samples/{model}/samples.parquet``),
    instead of sampling the preset again; no throughput. CSP (``csp``) from the campaign's
    ``samples/{model}/csp.parquet``."""
    entry = cfg.validate({"models": linked_entries(config, model), "active_models": [model]})["models"][model]
    plan = SamplingPlan.of(entry["family"], entry["sample"])
    network, _ = load_model(results / f"models/{model}/last.ckpt")
    return {"model": model, "sampler": f"preset ({plan.sampler}, {plan.steps} steps; campaign samples)",
            "grid power": plan.grid_power, "NFE": network.sampler(plan).evaluations(plan.steps), "structures/s": "",
            **score(read_table(samples / model / "samples.parquet")),
            **(match_figures(read_table(samples / model / "csp.parquet"), csp[0]) if csp else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True, help="results/{campaign} with models/*/last.ckpt")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 8, 16, 32, 100])
    parser.add_argument("--variants", nargs="*", default=["euler", "heun"], choices=sorted(VARIANTS))
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--test", type=Path, help="test split (default: the first model's data set's)")
    parser.add_argument("--oxidation-states", default="smact14")
    parser.add_argument("--out", type=Path, default=Path("results/few_step"))
    parser.add_argument("--fingerprints", type=Path,
                        help="the test split's fingerprints (screen/reference_fingerprints): adds COV-R/P per row")
    parser.add_argument("--threads", type=int, default=1, help="fingerprinting processes")
    parser.add_argument("--grid-powers", type=float, nargs="+", default=[1.0],
                        help="time grids t_k = 1 - (1 - k/N)^p of the few-step rows (1: uniform)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="sample settings of the few-step rows, e.g. unmasking=confidence type_temperature=0.8")
    parser.add_argument("--csp", type=int, default=0, help="structure predictions per row (DiffCSP match rate)")
    parser.add_argument("--no-preset", action="store_true", help="leave out the preset's row")
    parser.add_argument("--preset-samples", type=Path,
                        help="results/{campaign}/samples: score the preset row on the campaign's samples, not anew")
    args = parser.parse_args()

    config = cfg.load(args.config)
    dataset = config["models"][args.models[0]]["dataset"]
    test = read_table(args.test or args.results / f"data/{dataset}/test.parquet")
    args.out.mkdir(parents=True, exist_ok=True)
    reference_fp = read_parquet(args.fingerprints) if args.fingerprints else None
    score = functools.partial(figures, test=test, oxidation_states=args.oxidation_states, reference_fp=reference_fp,
                              workers=args.threads)
    csp = (test, args.csp) if args.csp else None
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    rows = []
    for model in args.models:
        if args.preset_samples:
            rows.append(campaign_row(config, args.results, model, args.preset_samples, score, csp))
            print(rows[-1], flush=True)
        elif not args.no_preset:
            rows.append(run(config, args.results, model, "", None, args.samples, args.out, score, config["seed"],
                            csp=csp))
            print(rows[-1], flush=True)
        for variant in args.variants:
            for nfe in args.nfe:
                for power in args.grid_powers:
                    rows.append(run(config, args.results, model, variant, nfe, args.samples, args.out, score,
                                    config["seed"], power, csp, overrides))
                    print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "few_step.csv", index=False)
    print(json.dumps(hardware()))
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
