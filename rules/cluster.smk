# Cluster resources of the rules: partitions, accounts, SLURM priorities, and how a
# multi-GPU or multi-node training job and a multi-rank DFT job are launched.


# SLURM --nice of a rule's jobs (the scheduler starts a user's queued jobs in priority
# order, first in first out by default): per-source screening after training, and the
# literature metrics (nothing but the summary waits for them) last. Jobs of the sources
# a later training waits for (chain_sources) are not niced, so the reward fine-tune and
# everything after it do not queue behind every other source's screening; nor are the
# trainings that chain starts from (chain_trainings), which go before the other models'
# trainings and before the Tc predictor (needed only once the chain's samples are screened).
SLURM_NICE = {
    "train_model": 50,
    "tc_predictor": 100,
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
SLURM_NICE_ALWAYS = {
    "sample_csp",
    "reference_fingerprints",
    "screen_metrics",
    "tc_predictor",
}


def slurm_nice(rule_name):
    nice = f"--nice={SLURM_NICE[rule_name]}"
    if rule_name in SLURM_NICE_ALWAYS:
        return nice
    exempt = (
        GRAPH.chain_trainings if rule_name == "train_model" else GRAPH.chain_sources
    )
    return lambda wildcards: "" if wildcards.get("model") in exempt() else nice


def rule_resources(rule_name, **defaults):
    """A rule's resources: its own defaults, the campaign's partition and account
    (config ``cluster``), then ``cluster.resources[rule_name]`` on top. Jobs asking for
    GPUs (``gpu``, or a gpu ``gres``; numbers or functions of the wildcards) go to
    ``cluster.gpu_partition``; rules in SLURM_NICE get their --nice in ``slurm_extra``,
    after the rule's own (a ``slurm_extra`` of ``cluster.resources`` replaces both).
    """
    resources = dict(defaults)
    if rule_name in SLURM_NICE:
        own, nice = resources.get("slurm_extra", ""), slurm_nice(rule_name)
        resources["slurm_extra"] = lambda wildcards: " ".join(
            part
            for part in (own, nice if isinstance(nice, str) else nice(wildcards))
            if part
        )
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


def dft_mpi(wildcards):
    """srun for a multi-rank DFT job (the executor then leaves the job step to CP2K's
    launcher); nothing for one rank (the executor refuses mpi with one task)."""
    return "srun" if config["dft"]["resources"]["tasks"] > 1 else ""
