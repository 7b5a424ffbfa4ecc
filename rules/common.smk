# Shared paths and input functions; no science here (see src/onnes).
import os
import re
import shlex

from onnes.catalogue import (
    AUXILIARY_FILES,
    DATASET_FILES,
    ELEMENT_REFERENCE_FILE,
    FILES,
    HULL_REFERENCE_FILE,
)
from onnes.data.fetch import check_mirror
from onnes.graph import CampaignGraph
from onnes.rounds import round_of_dir
from onnes.stage_settings import settings_argument

RESULTS = f"{config['results_dir']}/{config['campaign']}"
CLUSTER = config["cluster"]
CACHE = config["data_cache"]
# The links between models and the roles of data sets: asked here, walked in onnes.graph.
GRAPH = CampaignGraph(config)
# Built-in data sets (fetched and curated), then the user's own (data.custom: imported).
BUILTIN_DATASETS = config["data"]["datasets"]
CUSTOM_DATASETS = list(config["data"]["custom"])
# Unions of the above (data.combined: e.g. all general crystals for pretraining), those
# a trained model or a candidate source uses.
COMBINED_DATASETS = GRAPH.used_combined()
DATASETS = GRAPH.datasets()
# The user's own candidate structures (config candidates), screened like samples.
USER_CANDIDATES = GRAPH.user_candidates


wildcard_constraints:
    dataset="|".join(
        re.escape(d) for d in [*DATASET_FILES, *CUSTOM_DATASETS, *COMBINED_DATASETS]
    ),
    path="|".join(re.escape(p) for p in FILES),


if config["data_mirror"]:
    check_mirror(
        config["data_mirror"],
        sorted(
            {p for d in BUILTIN_DATASETS for p in DATASET_FILES[d]}
            | set(AUXILIARY_FILES)
        ),
        CACHE,
    )


def settings_of(rule_name):
    """A rule's ``--settings``: its jobs' slice of the config, built by
    onnes.stage_settings and nowhere else."""
    return lambda wildcards: settings_argument(
        config, rule_name, **dict(wildcards.items())
    )


def raw_files(wildcards):
    """Cached raw files a data set is curated from."""
    return [f"{CACHE}/{path}" for path in DATASET_FILES[wildcards.dataset]]


def user_files(entry):
    """The files a user entry (data.custom.<name>, candidates.<name>) names now, and its
    label CSV: the import job's inputs, so that a new or changed file reruns it."""
    # imported here, not at the top: it pulls in curation (pymatgen's matcher, scipy),
    # which every cluster job's re-read of the workflow would otherwise pay for
    from onnes.data.importer import find_files

    paths = [entry["path"]] if isinstance(entry["path"], str) else entry["path"]
    found = [str(p) for p in find_files(paths, entry["format"])]
    return found + ([entry["labels"]] if entry["labels"] else [])


def combined_members(wildcards):
    """A combined data set's members' curated tables, by member name, in config order."""
    members = config["data"]["combined"][wildcards.dataset]["datasets"]
    return {m: f"{RESULTS}/data/{m}/curated.parquet" for m in members}


def mirror_option():
    mirror = config["data_mirror"]
    return f"--mirror {shlex.quote(mirror)}" if mirror else ""


def data_targets():
    splits = expand(
        f"{RESULTS}/data/{{dataset}}/{{split}}.parquet",
        dataset=DATASETS,
        split=["train", "val", "test"],
    )
    auxiliary = [f"{CACHE}/{path}" for path in AUXILIARY_FILES]
    return [*splits, f"{RESULTS}/data/curation.json", *auxiliary]


# -- models ---------------------------------------------------------------------------
# config.validate has checked that every active name is defined.
MODELS = GRAPH.active
BASELINES = GRAPH.baselines
# {model} names a trained model, a baseline or the user's candidates: all run through
# the same funnel.
CANDIDATE_SOURCES = GRAPH.candidate_sources


def _alternatives(names):
    return "|".join(re.escape(n) for n in names) or "nothing-configured"


wildcard_constraints:
    model=_alternatives(list(config["models"]) + BASELINES + USER_CANDIDATES),
    shard=r"\d+",
    slot=r"\d+",
    round=r"[1-9]\d*",
    # a DFT stage's directory below dft/: "" for round 0 (the campaign's), rounds/{k}/ after
    rnd=r"(rounds/[1-9]\d*/)?",


def model_split(split):
    """A split of the data set a model, baseline or candidate source is judged against
    (novelty, metrics, structure prediction)."""

    def inputs(wildcards):
        return f"{RESULTS}/data/{GRAPH.source_dataset(wildcards.model)}/{split}.parquet"

    return inputs


def training_split(split):
    """What a model trains on: its data set's split, or a reward fine-tune's rewarded
    samples."""

    def inputs(wildcards):
        if GRAPH.is_reward_finetune(wildcards.model):
            return f"{RESULTS}/tc/{wildcards.model}/reward/{split}.parquet"
        return model_split(split)(wildcards)

    return inputs


def sample_shards(wildcards):
    shards = config["models"][wildcards.model]["sample"]["shards"]
    return expand(
        f"{RESULTS}/samples/{{model}}/shards/{{shard}}.parquet",
        model=wildcards.model,
        shard=range(shards),
    )


def baseline_num_samples():
    if config["baselines"]["num_samples"]:
        return config["baselines"]["num_samples"]
    budgets = [config["models"][m]["sample"]["num_samples"] for m in MODELS]
    return max(budgets, default=1000)


def round_dir(k):
    """The round's directory level below screen/ and dft/: none for round 0 (the campaign
    as configured), rounds/{k}/ for the rounds loop.rounds adds."""
    return f"rounds/{k}/" if k else ""


def hull_references_of(wildcards):
    """The hull a source is judged on: its round's (earlier rounds' DFT phases included)."""
    return f"{RESULTS}/screen/{round_dir(GRAPH.round_of(wildcards.model))}hull_references.parquet"


def known_structures_of(wildcards):
    """Every crystal known when a source is judged: its round's."""
    return f"{RESULTS}/screen/{round_dir(GRAPH.round_of(wildcards.model))}known_structures.parquet"


def round_feedback_inputs(wildcards):
    """A later round's references: the campaign's hull and known crystals, and the DFT
    tables of every earlier round that ran DFT (keys: round numbers)."""
    earlier = [k for k in GRAPH.dft_rounds() if k < int(wildcards.round)]
    return {
        "references": f"{RESULTS}/screen/hull_references.parquet",
        "known": f"{RESULTS}/screen/known_structures.parquet",
        "elements": f"{CACHE}/{ELEMENT_REFERENCE_FILE}",
        **{str(k): f"{RESULTS}/dft/{round_dir(k)}dft.parquet" for k in earlier},
    }


def hull_reference_inputs(wildcards):
    curated = {d: f"{RESULTS}/data/{d}/curated.parquet" for d in GRAPH.hull_datasets()}
    return {"mp20": f"{CACHE}/{HULL_REFERENCE_FILE}", **curated}


def known_structure_inputs(wildcards):
    """Every split of every structure data set the campaign curates: the reference of
    strict novelty (keys DATASET/SPLIT)."""
    return {
        f"{d}/{split}": f"{RESULTS}/data/{d}/{split}.parquet"
        for d in GRAPH.known_datasets()
        for split in ("train", "val", "test")
    }


def confirm_input(wildcards):
    """The confirming relaxation's results, when a confirming MLIP is configured."""
    if config["confirm"]["calculator"]:
        return {"confirmed": f"{RESULTS}/screen/{wildcards.model}/confirm.parquet"}
    return {}


def relax_shards(wildcards):
    return expand(
        f"{RESULTS}/screen/{{model}}/relax/{{shard}}.parquet",
        model=wildcards.model,
        shard=range(config["relax"]["shards"]),
    )


def csp_input(wildcards):
    """Structure-prediction samples for the match rate: trained models only."""
    if (
        wildcards.model in config["models"]
        and config["screen"]["metrics"]["csp_structures"]
    ):
        return f"{RESULTS}/samples/{wildcards.model}/csp.parquet"
    return []


def model_checkpoint(wildcards):
    return f"{RESULTS}/models/{GRAPH.weights_of(wildcards.model)}/last.ckpt"


def base_checkpoint(wildcards):
    """The pretrained base of an adapter or reward fine-tune, as a named input (or nothing)."""
    base = GRAPH.base_of(wildcards.model)
    return {"base": f"{RESULTS}/models/{base}/last.ckpt"} if base else {}


def distill_source_checkpoint(wildcards):
    """The teacher checkpoint whose ODE draws a distilled model's reflow pairs."""
    return f"{RESULTS}/models/{GRAPH.distill_source(wildcards.model)}/last.ckpt"


def teacher_sampling(wildcards):
    """The sample block of a distilled model's teacher (threads and device of its pairs)."""
    return config["models"][GRAPH.distill_source(wildcards.model)]["sample"]


def reflow_pairs(wildcards):
    """A distilled model's reflow pairs, as a named input (or nothing)."""
    if GRAPH.distill_source(wildcards.model):
        return {"pairs": f"{RESULTS}/models/{wildcards.model}/reflow_pairs.pt"}
    return {}


def model_targets():
    return expand(
        f"{RESULTS}/screen/{{model}}/{{name}}",
        model=CANDIDATE_SOURCES,
        name=["funnel.json", "metrics.json"],
    ) + [f"{RESULTS}/screen/summary.csv"]


def campaign_targets():
    return (
        data_targets()
        + model_targets()
        + tc_targets()
        + dft_targets()
        + report_targets()
    )
