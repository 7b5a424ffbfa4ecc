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


def campaign_targets():
    return data_targets()
