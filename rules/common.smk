# Shared paths and input functions; no science here (see src/onnes).
import json
import os
import re
import shlex

from onnes.data.sources import DATASET_FILES, FILES

RESULTS = f"{config['results_dir']}/{config['campaign']}"
CACHE = config["data_cache"]
DATASETS = config["data"]["datasets"]
# Files fetched for later stages, not curated (the convex-hull references).
AUXILIARY_FILES = DATASET_FILES["hull_refs"]


wildcard_constraints:
    dataset="|".join(re.escape(d) for d in DATASET_FILES),
    path="|".join(re.escape(p) for p in FILES),


def raw_files(wildcards):
    """Cached raw files a data set is curated from."""
    return [f"{CACHE}/{path}" for path in DATASET_FILES[wildcards.dataset]]


def mirror_option():
    mirror = config["data_mirror"]
    return f"--mirror {shlex.quote(mirror)}" if mirror else ""


def curate_settings(wildcards):
    """The config subset curation of one data set depends on, as shell-quoted JSON.

    Passing only this subset means Snakemake reruns a stage when, and only when, a
    setting it uses changes.
    """
    data = config["data"]
    subset = {
        k: v for k, v in data.items() if k not in ("datasets", "per_dataset", "split")
    }
    subset["per_dataset"] = {wildcards.dataset: data["per_dataset"][wildcards.dataset]}
    return shlex.quote(json.dumps({"data": subset}, sort_keys=True))


def split_settings(wildcards):
    data = config["data"]
    subset = {
        "split": data["split"],
        "per_dataset": {wildcards.dataset: data["per_dataset"][wildcards.dataset]},
    }
    return shlex.quote(
        json.dumps({"seed": config["seed"], "data": subset}, sort_keys=True)
    )


def data_targets():
    splits = expand(
        f"{RESULTS}/data/{{dataset}}/{{split}}.parquet",
        dataset=DATASETS,
        split=["train", "val", "test"],
    )
    auxiliary = [f"{CACHE}/{path}" for path in AUXILIARY_FILES]
    return [*splits, f"{RESULTS}/data/curation.json", *auxiliary]


# -- models ---------------------------------------------------------------------------
MODELS = config["active_models"] or list(config["models"])
for _name in MODELS:
    if _name not in config["models"]:
        raise ValueError(
            f"config key 'active_models': '{_name}' is not defined under 'models'"
        )


wildcard_constraints:
    model="|".join(re.escape(m) for m in config["models"]) or "no-model-configured",
    shard=r"\d+",


def model_settings(wildcards):
    """Shell-quoted JSON of the seed and this model's entry: a rule reruns only when
    these change."""
    subset = {
        "seed": config["seed"],
        "models": {wildcards.model: config["models"][wildcards.model]},
    }
    return shlex.quote(json.dumps(subset, sort_keys=True))


def model_split(split):
    def inputs(wildcards):
        dataset = config["models"][wildcards.model]["dataset"]
        return f"{RESULTS}/data/{dataset}/{split}.parquet"

    return inputs


def train_launcher(wildcards):
    """Nothing for one process; torchrun for several GPUs on one node; on several nodes
    one torchrun per node through srun, meeting at the first node of the allocation."""
    train = config["models"][wildcards.model]["train"]
    per_node = max(1, train["gpus"])
    if per_node * train["nodes"] == 1:
        return ""
    if train["nodes"] == 1:
        return f"torchrun --standalone --nproc_per_node={per_node} --no-python"
    return (
        f"srun --ntasks-per-node=1 torchrun --nnodes={train['nodes']} --nproc_per_node={per_node}"
        " --rdzv_backend=c10d --rdzv_id=$SLURM_JOB_ID"
        " --rdzv_endpoint=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1):29500 --no-python"
    )


def sample_shards(wildcards):
    shards = config["models"][wildcards.model]["sample"]["shards"]
    return expand(
        f"{RESULTS}/samples/{{model}}/shards/{{shard}}.parquet",
        model=wildcards.model,
        shard=range(shards),
    )


def screen_settings(wildcards):
    return shlex.quote(json.dumps({"screen": config["screen"]}, sort_keys=True))


def model_targets():
    return expand(f"{RESULTS}/screen/{{model}}/funnel.json", model=MODELS)


def campaign_targets():
    return data_targets() + model_targets()
