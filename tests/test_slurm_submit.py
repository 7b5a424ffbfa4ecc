"""The sbatch command lines `--profile slurm` produces for GPU training on one and on
several nodes, GPU sampling and MPI DFT jobs, and the partitions from config `cluster`.

Real Snakemake, the real SLURM executor plugin and the real rules; stub SLURM tools on
PATH (the sbatch stub records its arguments and refuses the job), so no cluster and no
GPU are needed. The single-node cluster test that runs jobs is in test_workflow.py.
"""

import os
import shlex
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.workflow

STUBS = {
    # record the call, refuse the job: Snakemake reports "SLURM sbatch failed" and stops
    "sbatch": 'printf "%s\\n" "$*" >> "$SBATCH_RECORD"\necho "sbatch: error: stub" >&2\nexit 1',
    # the cluster's partitions; '*' marks the default
    "sinfo": "printf 'PARTITION\\ncpu*\\ngpu\\n'",
    # no accounting: account guessing and status queries fail, as on a small cluster
    "sacct": "exit 1",
    # the accounts the user may charge, which the plugin checks -A against
    "sacctmgr": "echo materials",
    "sshare": "echo materials",
    "squeue": "exit 1",
    "scontrol": "exit 1",
}
# Inputs of the rules under test, so that only these rules are scheduled.
INPUTS = ["results/demo/data/mp20/train.parquet", "results/demo/data/mp20/val.parquet",
          "results/demo/dft/candidates.parquet",
          # a CP2K slot's local hull: the decomposition products and their structures
          "results/demo/screen/hull_references.parquet", "results/demo/screen/known_structures.parquet",
          "resources/data/hull_refs/mp_elemental_reference_entries_2023-02-07.json.gz"]


def submit(tmp_path, overlay: dict, rules: list[str], targets: list[str], inputs=()) -> dict[str, list[str]]:
    """sbatch options (before --wrap) per job, keyed by the plugin's job comment."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in STUBS.items():
        (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bindir / name).chmod(0o755)
    workdir = tmp_path / "wd"
    for path in [*INPUTS, *inputs]:
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).touch()
    (workdir / "resources/data/cp2k_pmg").mkdir(parents=True)
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    record = tmp_path / "sbatch.calls"
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "SBATCH_RECORD": str(record)}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "slurm", "-d", str(workdir), "--configfile",
         str(REPO / "config/demo.yaml"), str(tmp_path / "overlay.yaml"), "--slurm-status-command", "squeue",
         "--slurm-init-seconds-before-status-checks", "1", "--retries", "0", "--keep-going",
         "--allowed-rules", *rules, "--", *targets],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "SLURM sbatch failed" in result.stdout + result.stderr, result.stderr[-3000:]
    calls = {}
    for line in record.read_text().splitlines():
        options = shlex.split(line.split(" --wrap=")[0])
        calls[options[options.index("--comment") + 1]] = options
    return calls


def value(options: list[str], flag: str) -> str:
    return options[options.index(flag) + 1]


def shell_commands(tmp_path, overlay: dict, target: str) -> str:
    """The rule's shell command as Snakemake would run it (dry run, -p)."""
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "-d", str(tmp_path / "dry"),
         "--configfile", str(REPO / "config/demo.yaml"), str(tmp_path / "overlay.yaml"), "--", target],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_one_node_multi_gpu_training_asks_for_the_gpus_in_the_gpu_partition(tmp_path):
    overlay = {"models": {"flow": {"train": {"gpus": 4, "threads": 8}}},
               "cluster": {"partition": "cpu", "gpu_partition": "gpu"}}
    options = submit(tmp_path, overlay, ["train_model"], ["results/demo/models/flow/last.ckpt"])[
        "rule_train_model_wildcards_flow"]
    for flag in ["--gpus=4", "--nodes=1", "--cpus-per-task=8", "--requeue", "--export=ALL", "--signal=USR1@300"]:
        assert flag in options, options
    assert value(options, "-p") == "gpu" and value(options, "--mem") == "16000" and value(options, "-t") == "1440"
    assert not any(o.startswith(("--ntasks", "--gres")) for o in options), options
    assert "torchrun --standalone --nproc_per_node=4" in shell_commands(
        tmp_path, overlay, "results/demo/models/flow/last.ckpt")


def test_the_chain_trains_first_and_other_trainings_are_niced(tmp_path):
    """The demo's reward chain starts from flow (flow-tc-cfg's adapter base): its
    training goes to SLURM un-niced, other families' trainings with --nice, and both
    keep the rule's own --signal."""
    calls = submit(tmp_path, {}, ["train_model"],
                   ["results/demo/models/flow/last.ckpt", "results/demo/models/diffusion/last.ckpt"])
    chain, other = calls["rule_train_model_wildcards_flow"], calls["rule_train_model_wildcards_diffusion"]
    assert "--signal=USR1@300" in chain and not any(o.startswith("--nice") for o in chain), chain
    assert "--signal=USR1@300" in other and "--nice=50" in other, other


def test_multi_node_training_runs_one_torchrun_per_node(tmp_path):
    overlay = {"models": {"flow": {"train": {"gpus": 4, "nodes": 2, "threads": 8}}},
               "cluster": {"gpu_partition": "gpu", "account": "materials"}}
    options = submit(tmp_path, overlay, ["train_model"], ["results/demo/models/flow/last.ckpt"])[
        "rule_train_model_wildcards_flow"]
    # GPUs per node as gres, one task per node; no --gpus (a job total) and no per-GPU tasks
    for flag in ["--gres=gpu:4", "--nodes=2", "--ntasks=2", "--cpus-per-task=8"]:
        assert flag in options, options
    assert not any(o.startswith(("--gpus", "--ntasks-per-gpu")) for o in options), options
    assert value(options, "-p") == "gpu" and value(options, "-A") == "materials"
    assert "srun --ntasks-per-node=1 torchrun --nnodes=2 --nproc_per_node=4" in shell_commands(
        tmp_path, overlay, "results/demo/models/flow/last.ckpt")


def test_cuda_sampling_shards_are_single_gpu_jobs(tmp_path):
    overlay = {"models": {"flow": {"sample": {"device": "cuda"}}}, "cluster": {"gpu_partition": "gpu"}}
    calls = submit(tmp_path, overlay, ["sample_shard"],
                   [f"results/demo/samples/flow/shards/{i}.parquet" for i in (0, 1)],
                   inputs=["results/demo/models/flow/last.ckpt"])
    assert len(calls) == 2  # independent jobs, one per shard
    for options in calls.values():
        assert "--gpus=1" in options and value(options, "-p") == "gpu", options


def test_mpi_dft_job_and_per_rule_resources_from_config(tmp_path):
    overlay = {"dft": {"resources": {"nodes": 2, "tasks": 64, "threads": 1, "runtime": 720, "mem_mb": 64000}},
               "cluster": {"partition": "cpu", "gpu_partition": "gpu",
                           "resources": {"dft_run": {"slurm_extra": "--exclusive", "runtime": 900}}}}
    calls = submit(tmp_path, overlay, ["dft_run"], ["results/demo/dft/slots/0.json"])
    options = calls[next(k for k in calls if k.startswith("rule_dft_run_wildcards"))]  # rnd (empty), slot 0
    for flag in ["--ntasks=64", "--nodes=2", "--cpus-per-task=1", "--exclusive"]:
        assert flag in options, options
    assert value(options, "-p") == "cpu" and value(options, "-t") == "900" and value(options, "--mem") == "64000"
    assert not any(o.startswith("--gpus") for o in options)
    command = shell_commands(tmp_path, overlay, "results/demo/dft/slots/0.json")
    assert "onnes dft run" in command and "--launcher srun" in command


def test_the_profiles_parse():
    """Every key in the slurm profile and in the default workflow profile is a real
    Snakemake option, and both are read."""
    from snakemake.cli import parse_args

    parser, args = parse_args(["--profile", "slurm", "-n"])
    assert args is not None and args.executor == "slurm" and args.rerun_incomplete
    parser, args = parse_args(["-n"])
    assert args is not None and args.rerun_incomplete and args.latency_wait == 60
