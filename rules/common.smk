# Shared paths and input functions; no science here (see src/onnes).
import os
import re
import shlex

from onnes.config import structure_datasets, used_combined
from onnes.data.fetch import check_mirror
from onnes.data.sources import DATASET_FILES, FILES
from onnes.stage_settings import settings_argument

RESULTS = f"{config['results_dir']}/{config['campaign']}"
CLUSTER = config["cluster"]
CACHE = config["data_cache"]
# Built-in data sets (fetched and curated), then the user's own (data.custom: imported).
BUILTIN_DATASETS = config["data"]["datasets"]
CUSTOM_DATASETS = list(config["data"]["custom"])
# Unions of the above (data.combined: e.g. all general crystals for pretraining), those
# a trained model or a candidate source uses.
COMBINED_DATASETS = used_combined(config)
DATASETS = BUILTIN_DATASETS + CUSTOM_DATASETS + COMBINED_DATASETS
# The data sets of crystal structures among them: what strict novelty matches against.
KNOWN_DATASETS = [d for d in structure_datasets(config) if d in DATASETS]
# The user's own candidate structures (config candidates), screened like samples.
USER_CANDIDATES = list(config["candidates"])
# Files fetched for later stages, not curated (the convex-hull references).
AUXILIARY_FILES = DATASET_FILES["hull_refs"]


wildcard_constraints:
    dataset="|".join(
        re.escape(d) for d in [*DATASET_FILES, *CUSTOM_DATASETS, *COMBINED_DATASETS]
    ),
    path="|".join(re.escape(p) for p in FILES),


# SLURM --nice of a rule's jobs (the scheduler starts a user's queued jobs in priority
# order, first in first out by default): per-source screening after training, and the
# literature metrics (nothing but the summary waits for them) last. Jobs of the sources
# a later training waits for (chain_sources) are not niced, so the reward fine-tune and
# everything after it do not queue behind every other source's screening.
SLURM_NICE = {
    "sample_shard": 100,
    "screen_match": 100,
    "relax_shard": 100,
    "screen_stability": 100,
    "confirm_candidates": 100,
    "screen_finish": 100,
    "tc_rank": 100,
    "sample_baseline": 100,
    "sample_csp": 200,
    "reference_fingerprints": 200,
    "screen_metrics": 200,
}


# Their jobs are niced for every source, chain or not: nothing but the summary waits.
SLURM_NICE_ALWAYS = {"sample_csp", "reference_fingerprints", "screen_metrics"}


def chain_sources():
    """Sources another model trains on the output of: a reward fine-tune's samples
    (screened and predicted first), and the fine-tune itself (the campaign's tail)."""
    return {
        source
        for name in MODELS
        if config["models"][name]["reward"]["source"]
        for source in (name, reward_samples(name))
    }


def slurm_nice(rule_name):
    nice = f"--nice={SLURM_NICE[rule_name]}"
    if rule_name in SLURM_NICE_ALWAYS:
        return nice
    return lambda wildcards: "" if wildcards.get("model") in chain_sources() else nice


def rule_resources(rule_name, **defaults):
    """A rule's resources: its own defaults, the campaign's partition and account
    (config ``cluster``), then ``cluster.resources[rule_name]`` on top. Jobs asking for
    GPUs (``gpu``, or a gpu ``gres``; numbers or functions of the wildcards) go to
    ``cluster.gpu_partition``; rules in SLURM_NICE get their --nice as ``slurm_extra``
    (a ``slurm_extra`` of ``cluster.resources`` replaces it).
    """
    resources = dict(defaults)
    if rule_name in SLURM_NICE and "slurm_extra" not in resources:
        resources["slurm_extra"] = slurm_nice(rule_name)
    cpu_partition = CLUSTER["partition"]
    gpu_partition = CLUSTER["gpu_partition"] or cpu_partition
    if cpu_partition or gpu_partition:
        resolve = lambda key, wildcards: (
            resources[key](wildcards)
            if callable(resources.get(key))
            else resources.get(key)
        )
        uses_gpu = lambda wildcards: bool(resolve("gpu", wildcards)) or "gpu" in str(
            resolve("gres", wildcards) or ""
        )
        resources["slurm_partition"] = lambda wildcards: (
            gpu_partition if uses_gpu(wildcards) else cpu_partition
        )
    if CLUSTER["account"]:
        resources["slurm_account"] = CLUSTER["account"]
    resources.update(CLUSTER["resources"].get(rule_name, {}))
    return resources


def check_cluster_resources(rule_names):
    unknown = sorted(set(CLUSTER["resources"]) - set(rule_names))
    if unknown:
        raise ValueError(
            f"config key 'cluster.resources': no rule named {', '.join(unknown)}"
            f" (rules: {', '.join(sorted(rule_names))})"
        )


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
MODELS = config["active_models"] or list(config["models"])


BASELINES = list(config["active_baselines"])
# {model} names a trained model, a baseline or the user's candidates: all run through
# the same funnel.
CANDIDATE_SOURCES = MODELS + BASELINES + USER_CANDIDATES


def _alternatives(names):
    return "|".join(re.escape(n) for n in names) or "nothing-configured"


wildcard_constraints:
    model=_alternatives(list(config["models"]) + BASELINES + USER_CANDIDATES),
    shard=r"\d+",
    slot=r"\d+",


def source_dataset(name):
    """The curated data set a model trains on, a baseline draws from, or the user's
    candidates are judged against (novelty, metrics)."""
    if name in config["models"]:
        return config["models"][name]["dataset"]
    if name in config["candidates"]:
        return config["candidates"][name]["dataset"]
    return config["baselines"][name]["dataset"]


def model_split(split):
    """A split of the data set a model, baseline or candidate source is judged against
    (novelty, metrics, structure prediction)."""

    def inputs(wildcards):
        return f"{RESULTS}/data/{source_dataset(wildcards.model)}/{split}.parquet"

    return inputs


def training_split(split):
    """What a model trains on: its data set's split, or a reward fine-tune's rewarded
    samples."""

    def inputs(wildcards):
        if config["models"][wildcards.model]["reward"]["source"]:
            return f"{RESULTS}/tc/{wildcards.model}/reward/{split}.parquet"
        return model_split(split)(wildcards)

    return inputs


TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


def train_launcher(wildcards):
    """Nothing for one process; torchrun for several GPUs on one node; on several nodes
    one torchrun per node through srun, meeting at the first node of the allocation."""
    train = config["models"][wildcards.model]["train"]
    per_node = max(1, train["gpus"])
    if per_node * train["nodes"] == 1:
        return ""
    # torchrun handles TERM, INT, HUP and QUIT; SLURM's time-limit warning is USR1, which
    # would kill the agent outright. Listed here (torchrun's --signals-to-handle; one
    # without that option ignores it), the agent forwards USR1 to the ranks, which save
    # their state and exit 75.
    signals = f"PET_SIGNALS_TO_HANDLE={TORCHRUN_SIGNALS}"
    if train["nodes"] == 1:
        return (
            f"{signals} torchrun --standalone --nproc_per_node={per_node} --no-python"
        )
    return (
        f"{signals} srun --ntasks-per-node=1 torchrun --nnodes={train['nodes']} --nproc_per_node={per_node}"
        " --rdzv_backend=c10d --rdzv_id=$SLURM_JOB_ID"
        " --rdzv_endpoint=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1):29500 --no-python"
    )


def train_resource(key):
    """One SLURM resource of a training job, as a function of the model.

    One node: ``gpu`` (sbatch --gpus, all on that node), and the executor runs the rule
    in a one-task job step where torchrun starts a rank per GPU. Several nodes: ``gres``
    gpu:G per node, one task per node and ``mpi``, so that the executor leaves the job
    step to the rule, whose srun starts one torchrun per node (a nested srun inside the
    executor's step would wait forever for the CPUs that step holds).
    """

    def value(wildcards):
        train = config["models"][wildcards.model]["train"]
        gpus, nodes = train["gpus"], train["nodes"]
        multi_node = nodes > 1
        return {
            "gpu": 0 if multi_node else gpus,
            "gres": f"gpu:{gpus}" if multi_node and gpus else "",
            "nodes": nodes,
            "tasks": nodes,
            "mpi": "srun" if multi_node else "",
        }[key]

    return value


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


def hull_datasets():
    chosen = config["screen"]["hull_datasets"]
    if chosen is None:
        chosen = [d for d in ("mpts52", "wbm") if d in DATASETS]
    return chosen


def hull_reference_inputs(wildcards):
    curated = {d: f"{RESULTS}/data/{d}/curated.parquet" for d in hull_datasets()}
    return {"mp20": f"{CACHE}/{AUXILIARY_FILES[0]}", **curated}


def known_structure_inputs(wildcards):
    """Every split of every structure data set the campaign curates: the reference of
    strict novelty (keys DATASET/SPLIT)."""
    return {
        f"{d}/{split}": f"{RESULTS}/data/{d}/{split}.parquet"
        for d in KNOWN_DATASETS
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


def trained_weights(name):
    """The model whose checkpoint ``name`` samples from (itself, or its weights_from)."""
    return config["models"][name]["weights_from"] or name


def model_checkpoint(wildcards):
    return f"{RESULTS}/models/{trained_weights(wildcards.model)}/last.ckpt"


def base_checkpoint(wildcards):
    """The pretrained base of an adapter or reward fine-tune, as a named input (or nothing)."""
    entry = config["models"][wildcards.model]
    base = entry["adapter"]["base"] or entry["reward"]["source"]
    return {"base": f"{RESULTS}/models/{base}/last.ckpt"} if base else {}


# -- superconductivity ----------------------------------------------------------------
TC_DATASETS = [d for d in config["tc"]["predictor"]["datasets"] if d in DATASETS]
TC_ENABLED = config["tc"]["enabled"] and bool(TC_DATASETS)


def tc_predictor_inputs(wildcards):
    """The labelled data sets, and the MP DFT table (band gaps) when the predictor takes
    its band insulators as negatives or trains the metallicity gate."""
    names = {"supercon": "supercon", "3dsc": "structures"}
    inputs = {names[d]: f"{RESULTS}/data/{d}/curated.parquet" for d in TC_DATASETS}
    predictor = config["tc"]["predictor"]
    if predictor["negatives"]["enabled"] or predictor["gate"]["enabled"]:
        inputs["dft"] = f"{CACHE}/{AUXILIARY_FILES[0]}"
    return inputs


def reward_samples(name):
    """The model whose samples a reward fine-tune weighs (reward.samples, else its source)."""
    reward = config["models"][name]["reward"]
    return reward["samples"] or reward["source"]


def reward_source_predictions(wildcards):
    """The screened, Tc-predicted samples a reward fine-tune's rewarded set is drawn from."""
    return f"{RESULTS}/tc/{reward_samples(wildcards.model)}/predicted.parquet"


def steering_pairs():
    """Each steered model -> its unconditional counterpart: the model whose samples a
    reward fine-tune weighs;
    for a guided model (sample.target set) the same weights sampled without a target if
    configured, else an adapter's pretrained base.
    """
    pairs = {}
    for name in MODELS:
        entry = config["models"][name]
        if entry["reward"]["source"]:
            if reward_samples(name) in MODELS:
                pairs[name] = reward_samples(name)
            continue
        if entry["sample"]["target"] is None:
            continue
        twins = [
            other
            for other in MODELS
            if other != name
            and trained_weights(other) == trained_weights(name)
            and config["models"][other]["sample"]["target"] is None
        ]
        base = entry["adapter"]["base"]
        if twins:
            pairs[name] = twins[0]
        elif base in MODELS:
            pairs[name] = base
    return pairs


def tc_compare_inputs(wildcards):
    inputs = {
        name: f"{RESULTS}/tc/{name}/predicted.parquet" for name in CANDIDATE_SOURCES
    }
    reference = config["tc"]["steering"]["training_dataset"]
    if reference in DATASETS:
        inputs["training"] = f"{RESULTS}/data/{reference}/train.parquet"
    return inputs


def tc_targets():
    if not TC_ENABLED:
        return []
    ranked = expand(f"{RESULTS}/tc/{{model}}/ranked.parquet", model=CANDIDATE_SOURCES)
    return [
        f"{RESULTS}/tc/predictor/metrics.json",
        *ranked,
        f"{RESULTS}/tc/steering.csv",
    ]


# -- DFT ------------------------------------------------------------------------------
DFT_ENABLED = TC_ENABLED and config["dft"]["enabled"] and config["dft"]["top_k"] > 0


def dft_mpi(wildcards):
    """srun for a multi-rank DFT job (the executor then leaves the job step to CP2K's
    launcher); nothing for one rank (the executor refuses mpi with one task)."""
    return "srun" if config["dft"]["resources"]["tasks"] > 1 else ""


def _cp2k_data_input():
    if config["dft"]["code"] == "cp2k":
        return {"cp2k_data": f"{CACHE}/cp2k_pmg"}
    return {}


def cp2k_data_option(wildcards, input):
    """``--cp2k-data DIR`` when the rule has the CP2K basis/potential index as input."""
    if "cp2k_data" in input.keys():
        return f"--cp2k-data {shlex.quote(input.cp2k_data)}"
    return ""


def dft_select_inputs(wildcards):
    ranked = {name: f"{RESULTS}/tc/{name}/ranked.parquet" for name in CANDIDATE_SOURCES}
    return {**ranked, **_cp2k_data_input()}


def dft_run_inputs(wildcards):
    return {"candidates": f"{RESULTS}/dft/candidates.parquet", **_cp2k_data_input()}


def dft_results(wildcards):
    return expand(
        f"{RESULTS}/dft/slots/{{slot}}.json", slot=range(config["dft"]["top_k"])
    )


def dft_targets():
    return [f"{RESULTS}/dft/dft.parquet"] if DFT_ENABLED else []


def model_targets():
    return expand(
        f"{RESULTS}/screen/{{model}}/{{name}}",
        model=CANDIDATE_SOURCES,
        name=["funnel.json", "metrics.json"],
    ) + [f"{RESULTS}/screen/summary.csv"]


# -- report ---------------------------------------------------------------------------
TRAINED_MODELS = [m for m in MODELS if not config["models"][m]["weights_from"]]
# The training set whose densities and element counts the report's figures compare with.
_STRUCTURE_SETS = structure_datasets(config)
STRUCTURE_REFERENCE = "mp20" if "mp20" in _STRUCTURE_SETS else _STRUCTURE_SETS[0]


def report_inputs(wildcards):
    """Every table the campaign page reads, so it is redrawn when any of them changes."""
    inputs = {
        "funnels": expand(
            f"{RESULTS}/screen/{{model}}/funnel.json", model=CANDIDATE_SOURCES
        ),
        "screened": expand(
            f"{RESULTS}/screen/{{model}}/screened.parquet", model=CANDIDATE_SOURCES
        ),
        "curves": expand(
            f"{RESULTS}/models/{{model}}/metrics.csv", model=TRAINED_MODELS
        ),
        "raw": [
            f"{CACHE}/{path}" for d in BUILTIN_DATASETS for path in DATASET_FILES[d]
        ]
        + [f"{CACHE}/{path}" for path in AUXILIARY_FILES]
        + [f for d in CUSTOM_DATASETS for f in user_files(config["data"]["custom"][d])]
        + [f for c in USER_CANDIDATES for f in user_files(config["candidates"][c])],
        "structure_reference": f"{RESULTS}/data/{STRUCTURE_REFERENCE}/train.parquet",
    }
    if TC_ENABLED:
        inputs["predicted"] = expand(
            f"{RESULTS}/tc/{{model}}/predicted.parquet", model=CANDIDATE_SOURCES
        )
        inputs["ranked"] = expand(
            f"{RESULTS}/tc/{{model}}/ranked.parquet", model=CANDIDATE_SOURCES
        )
        reference = config["tc"]["steering"]["training_dataset"]
        if reference in DATASETS:
            inputs["tc_reference"] = f"{RESULTS}/data/{reference}/train.parquet"
    if DFT_ENABLED:
        inputs["dft"] = f"{RESULTS}/dft/dft.parquet"
    return inputs


def report_reference_options(wildcards, input):
    options = f"--structure-reference {shlex.quote(input.structure_reference)}"
    if "tc_reference" in input.keys():
        options += f" --tc-reference {shlex.quote(input.tc_reference)}"
    return options


def report_targets():
    if not config["report"]["enabled"]:
        return []
    return [f"{RESULTS}/report/index.html"]


def campaign_targets():
    return (
        data_targets()
        + model_targets()
        + tc_targets()
        + dft_targets()
        + report_targets()
    )
