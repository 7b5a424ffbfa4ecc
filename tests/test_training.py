"""Training: kill-and-resume reproduces the uninterrupted run; signals save state;
sharded data-parallel training (torchrun, Gloo on CPU); sampling shards."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from models_fixtures import model_settings, write_toy_splits

from onnes import crystals
from onnes.config import ConfigError
from onnes.sampling import gather, load_model, sample_shard, shard_sizes
from onnes.train.loop import EXIT_RESUME, BatchOrder, train


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return write_toy_splits(tmp_path_factory.mktemp("toy"))


def metrics(path):
    return pd.read_csv(path)


@pytest.mark.parametrize("family", ["flow", "diffusion", "interpolant", "kldm"])
def test_kill_and_resume_gives_the_same_loss_curve(family, splits, tmp_path):
    settings = model_settings(family)
    full = train(settings, "m", splits["train"], splits["val"], tmp_path / "full", seed=3)
    assert full["finished"]
    interrupted = train(settings, "m", splits["train"], splits["val"], tmp_path / "resumed", seed=3, max_steps=6)
    assert interrupted == {"step": 6, "finished": False}
    assert not (tmp_path / "resumed/last.ckpt").exists()
    resumed = train(settings, "m", splits["train"], splits["val"], tmp_path / "resumed", seed=3)
    assert resumed["finished"]
    a, b = metrics(tmp_path / "full/metrics.csv"), metrics(tmp_path / "resumed/metrics.csv")
    assert a.step.tolist() == b.step.tolist() == [2, 4, 6, 8, 10, 12]
    for column in ("loss", "loss_lattice", "loss_frac", "loss_types", "val_loss"):
        assert a[column].to_numpy() == pytest.approx(b[column].to_numpy(), rel=1e-4, abs=1e-6, nan_ok=True)
    # The final EMA weights agree as well.
    wa = torch.load(tmp_path / "full/last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "resumed/last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_batch_order_is_a_function_of_step():
    order = BatchOrder(size=10, batch_size=4, seed=1)
    first = [order.indices(s).tolist() for s in range(6)]
    again = BatchOrder(size=10, batch_size=4, seed=1)
    assert [again.indices(s).tolist() for s in reversed(range(6))] == list(reversed(first))
    assert sorted(sum(first[:2], [])) == sorted(set(sum(first[:2], [])))  # no repeats in an epoch


def _cli_train(splits, out_dir, settings, extra=()):
    payload = json.dumps({"seed": 0, "models": {"m": settings}})
    return [sys.executable, "-m", "onnes.cli", "train", "--model", "m", "--train", str(splits["train"]),
            "--val", str(splits["val"]), "--out-dir", str(out_dir), "--settings", payload, *extra]


def test_sigterm_saves_state_and_exits_for_requeue(splits, tmp_path):
    settings = model_settings("flow", train={"steps": 100000, "checkpoint_every": 100000})
    proc = subprocess.Popen(_cli_train(splits, tmp_path, settings), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    for line in proc.stdout:  # wait until training is under way
        if "step/s" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == EXIT_RESUME, output[-2000:]
    state = torch.load(tmp_path / "resume/state.ckpt", weights_only=True)
    assert state["step"] > 0
    assert not (tmp_path / "last.ckpt").exists()


def test_sharded_data_parallel_training_with_torchrun(splits, tmp_path):
    settings = model_settings("diffusion", train={"steps": 4, "batch_size": 8})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "onnes.cli", *_cli_train(splits, tmp_path, settings)[3:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 ranks on cpu" in result.stderr
    assert (tmp_path / "last.ckpt").exists()
    assert metrics(tmp_path / "metrics.csv").step.tolist() == [2, 4]


def _torchrun_workers(agent: subprocess.Popen) -> dict[int, int]:
    """RANK -> pid of the worker processes a torchrun agent started."""
    children = open(f"/proc/{agent.pid}/task/{agent.pid}/children").read().split()
    workers = {}
    for pid in map(int, children):
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        rank = next((item.split(b"=", 1)[1] for item in environ if item.startswith(b"RANK=")), None)
        if rank is not None:
            workers[int(rank)] = pid
    return workers


def _torchrun_until_stopped(command, env, send):
    """Start two-rank training, let it run, ``send(agent)`` a signal; return the output."""
    agent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline, seen = time.time() + 180, []
    for line in agent.stdout:
        seen.append(line)
        if "2 ranks on cpu" in line or time.time() > deadline:
            break
    time.sleep(2)
    send(agent)
    return agent, "".join(seen) + agent.communicate(timeout=180)[0]


def test_two_rank_training_stops_together_on_a_signal_and_resumes(splits, tmp_path):
    """A signal on one rank stops both at the same step (the flag rides on the step's
    all-reduce); SLURM's USR1 sent to the torchrun agent reaches the ranks; the saved
    state resumes under torchrun."""
    settings = model_settings("flow", train={"steps": 100000, "batch_size": 8, "checkpoint_every": 100000})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "onnes.cli", *_cli_train(splits, tmp_path, settings)[3:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"}

    # Only rank 1 is told to stop; rank 0 must follow, or the agent would hang.
    agent, output = _torchrun_until_stopped(
        command, env, lambda agent: os.kill(_torchrun_workers(agent)[1], signal.SIGUSR1))
    assert agent.returncode != 0, output[-3000:]
    assert "a signal on another rank" in output and f"exiting {EXIT_RESUME}" in output, output[-3000:]
    first = torch.load(tmp_path / "resume/state.ckpt", weights_only=True)["step"]
    assert first > 0

    # As SLURM's --signal=USR1 does: the agent is signalled and forwards it to the ranks.
    agent, output = _torchrun_until_stopped(command, env, lambda agent: agent.send_signal(signal.SIGUSR1))
    assert f"resuming from step {first}" in output, output[-3000:]
    assert f"signal {int(signal.SIGUSR1)} at step" in output, output[-3000:]
    assert torch.load(tmp_path / "resume/state.ckpt", weights_only=True)["step"] > first
    assert not (tmp_path / "last.ckpt").exists()


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    train(model_settings("flow"), "m", splits["train"], splits["val"], out, seed=0)
    return out / "last.ckpt"


def test_sampling_shards_are_reproducible_and_gathered(trained, tmp_path):
    settings = model_settings("flow")
    assert shard_sizes(12, 2) == [6, 6] and shard_sizes(7, 3) == [3, 2, 2]
    sample_shard(trained, 0, tmp_path / "a0.parquet", seed=0, settings=settings)
    sample_shard(trained, 0, tmp_path / "b0.parquet", seed=0, settings=settings)
    sample_shard(trained, 1, tmp_path / "a1.parquet", seed=0, settings=settings)
    a0, b0, a1 = (pd.read_parquet(tmp_path / f) for f in ("a0.parquet", "b0.parquet", "a1.parquet"))
    pd.testing.assert_frame_equal(a0, b0)
    assert not np.allclose(np.stack(a0.lattice), np.stack(a1.lattice))
    assert len(a0) == 6 and set(a0.source) == {"m"}
    summary = gather([tmp_path / "a0.parquet", tmp_path / "a1.parquet"], tmp_path / "all.parquet",
                     tmp_path / "summary.json")
    assert summary["count"] == 12 and 0.0 <= summary["valid_struct_fraction"] <= 1.0
    model, state = load_model(trained)
    assert state["model_name"] == "m" and state["step"] == 12
    assert set(pd.read_parquet(tmp_path / "all.parquet").id) == set(a0.id) | set(a1.id)
    # More shards than samples: the empty shard is still a crystal table, and gathers.
    few = {**settings, "sample": {**settings["sample"], "num_samples": 1, "shards": 2}}
    sample_shard(trained, 1, tmp_path / "empty.parquet", seed=0, settings=few)
    empty = crystals.read_table(tmp_path / "empty.parquet")
    assert len(empty) == 0 and list(empty.columns[:5]) == list(crystals.REQUIRED_COLUMNS)
    assert gather([tmp_path / "a0.parquet", tmp_path / "empty.parquet"], tmp_path / "g.parquet",
                  tmp_path / "g.json")["count"] == 6


def test_changed_architecture_starts_afresh_but_more_steps_resume(splits, tmp_path):
    short = model_settings("flow", train={"steps": 4})
    train(short, "m", splits["train"], splits["val"], tmp_path, seed=0)
    longer = model_settings("flow", train={"steps": 6})
    assert train(longer, "m", splits["train"], splits["val"], tmp_path, seed=0)["rows"][0]["step"] == 2
    assert metrics(tmp_path / "metrics.csv").step.tolist() == [2, 4, 6]  # continued from step 4
    wider = model_settings("flow", train={"steps": 2}, denoiser={"hidden": 48})
    train(wider, "m", splits["train"], splits["val"], tmp_path, seed=0)
    assert (tmp_path / "resume/state.stale.ckpt").exists()
    assert metrics(tmp_path / "metrics.csv").step.tolist() == [2]


def test_structure_prediction_samples_the_given_composition(trained, tmp_path):
    settings = model_settings("flow", sample={"composition": "SrTiO3", "formula_units": [1, 2]})
    sample_shard(trained, 0, tmp_path / "csp.parquet", seed=0, settings=settings)
    table = pd.read_parquet(tmp_path / "csp.parquet")
    for species in table.species:
        counts = np.bincount(species, minlength=39)
        assert counts[38] in (1, 2) and counts[22] == counts[38] and counts[8] == 3 * counts[38]
    with pytest.raises(ValueError, match="vocabulary"):
        sample_shard(trained, 0, tmp_path / "x.parquet", seed=0,
                     settings=model_settings("flow", sample={"composition": "PuO2"}))


def test_sampling_settings_apply_without_retraining(splits, tmp_path):
    # A sampling setting the model cannot honour does not stop training: SDE sampling of
    # a gamma-free interpolant fails when sampling, with a clear message.
    # (A campaign's config check refuses it up front.)
    with pytest.raises(ConfigError, match="gamma"):
        model_settings("interpolant", sample={"sampler": "sde"})
    bad = model_settings("interpolant", train={"steps": 2})
    bad["sample"] = {**bad["sample"], "sampler": "sde", "noise": 0.2}
    train(bad, "m", splits["train"], splits["val"], tmp_path / "plain", seed=0)
    with pytest.raises(ValueError, match="gamma"):
        sample_shard(tmp_path / "plain/last.ckpt", 0, tmp_path / "x.parquet", seed=0, settings=bad)
    settings = model_settings("interpolant", interpolant={"gamma": "bridge"}, train={"steps": 2})
    train(settings, "m", splits["train"], splits["val"], tmp_path, seed=0)
    stored, _ = load_model(tmp_path / "last.ckpt")
    assert type(stored.sampler()).__name__ == "Euler"
    sde = model_settings("interpolant", interpolant={"gamma": "bridge"}, sample={"sampler": "sde", "noise": 0.2})
    model, _ = load_model(tmp_path / "last.ckpt")
    sampler = model.sampler(model.sampling_plan(sde["sample"]))
    assert model.settings["sample"]["sampler"] is None  # the checkpoint's settings stay as trained
    assert type(sampler).__name__ == "EulerMaruyama" and sampler.mode.noise == 0.2
    a = sample_shard(tmp_path / "last.ckpt", 0, tmp_path / "ode.parquet", seed=0, settings=settings)
    b = sample_shard(tmp_path / "last.ckpt", 0, tmp_path / "sde.parquet", seed=0, settings=sde)
    assert a["count"] == b["count"]
    ode, noisy = pd.read_parquet(tmp_path / "ode.parquet"), pd.read_parquet(tmp_path / "sde.parquet")
    assert not np.allclose(np.stack(ode.lattice), np.stack(noisy.lattice))