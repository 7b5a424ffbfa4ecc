"""A new process is one class and a new family one record: this file defines both (the
process with auxiliary per-atom state), and they train and sample through the package's
public entry points, nothing else edited."""

import numpy as np
import pandas as pd
import pytest
import torch
from models_fixtures import model_settings, write_toy_splits

from onnes.config import ConfigError
from onnes.models.processes import ODE, Process, register_process, remove_crystal_mean, signed_wrap, wrap
from onnes.sampling import load_model, sample_shard
from onnes.train.loop import train


class LaggedTorusFlow(Process):
    """Flow matching on the torus whose atoms also carry a 'lag' u that decays from a
    standard normal at t = 0 to 0 at t = 1 (u_t = (1 - t) z): one auxiliary column the
    sampler integrates and the denoiser sees."""

    aux_dim = 1
    torus = True

    def __init__(self, lag_scale: float = 1.0):
        self.lag_scale = lag_scale

    def prior(self, shape, gen, device, ctx=None):
        frac = torch.rand(shape, generator=gen, device=device)
        lag = self.lag_scale * torch.randn(shape[0], 1, generator=gen, device=device)
        return torch.cat([frac, lag], -1)

    def corrupt(self, x1, t, ctx, gen):
        x0 = torch.rand(x1.shape, generator=gen)
        lag = (1 - t) * self.lag_scale * torch.randn(x1.shape[0], 1, generator=gen)
        delta = signed_wrap(x1 - x0)
        return torch.cat([wrap(x0 + t * delta), lag], -1), remove_crystal_mean(delta, ctx)

    def step(self, x, pred, t, dt, ctx, gen, mode=ODE):
        frac, lag = x[:, :3], x[:, 3:]
        shrink = (1 - t - dt) / (1 - t).clamp_min(1e-6)
        return torch.cat([wrap(frac + dt * pred), lag * shrink], -1)

    def finalize(self, x):
        return wrap(x[:, :3])


def test_a_process_defined_here_trains_and_samples(tmp_path):
    register_process("lagged_torus_flow", LaggedTorusFlow)
    splits = write_toy_splits(tmp_path / "data")
    settings = model_settings("flow", processes={"frac": {"name": "lagged_torus_flow", "lag_scale": 0.5}})
    result = train(settings, "toy", splits["train"], splits["val"], tmp_path / "model", seed=0)
    assert result["finished"]
    model, _ = load_model(tmp_path / "model/last.ckpt")
    assert isinstance(model.processes["frac"], LaggedTorusFlow) and model.processes["frac"].lag_scale == 0.5
    assert model.denoiser.spec.aux_dim == 1  # the denoiser sees the lag
    summary = sample_shard(tmp_path / "model/last.ckpt", 0, tmp_path / "samples.parquet", seed=0,
                           settings=settings)
    table = pd.read_parquet(tmp_path / "samples.parquet")
    assert summary["count"] == len(table) == 6
    frac = np.concatenate(table.frac_coords.to_list())
    assert ((frac >= 0) & (frac < 1)).all() and len(frac) == 3 * table.num_sites.sum()
    metrics = pd.read_csv(tmp_path / "model/metrics.csv")
    assert np.isfinite(metrics.loss_frac).all()


def test_process_registration_and_names_are_checked():
    with pytest.raises(TypeError):
        register_process("not_a_process", dict)
    with pytest.raises(ConfigError, match="unknown process 'no_such_process'"):
        model_settings("flow", processes={"frac": {"name": "no_such_process"}})
    with pytest.raises(ConfigError, match="unexpected keyword"):
        model_settings("kldm", processes={"frac": {"friction": 2.0}})
    with pytest.raises(ConfigError, match="atoms at rest"):
        model_settings("kldm", processes={"frac": {"initial_velocity_scale": 0.5}})


def test_a_family_is_one_record_registered_here():
    """A family defined in this file alone: its processes (the toy one above on the
    coordinates), default sampler and steps. (A campaign also needs its name in the
    schema's family enum: the config names families the schema knows.)"""
    from onnes.models.families import FAMILIES, Family, register_family
    from onnes.models.model import GenerativeModel

    register_process("lagged_torus_flow", LaggedTorusFlow)
    record = register_family(Family("lagged_flow", {"lattice": "linear_flow", "frac": "lagged_torus_flow",
                                                    "types": "linear_flow"}, sampler="ode", steps=7))
    try:
        settings = {**model_settings("flow"), "family": "lagged_flow", "types": "continuous"}
        settings["sample"] = {**settings["sample"], "steps": None}
        model = GenerativeModel(settings, num_types=4)
        assert isinstance(model.processes["frac"], LaggedTorusFlow)
        plan = model.sampling_plan()
        assert (plan.sampler, plan.steps) == ("ode", 7)  # the family's defaults
        types, frac, lattice = model.eval().sample(torch.tensor([2, 3]), plan.steps, torch.Generator().manual_seed(0))
        assert types.shape == (5,) and frac.shape == (5, 3) and ((frac >= 0) & (frac < 1)).all()
        with pytest.raises(ValueError, match="already registered"):
            register_family(Family("lagged_flow", {**record.processes, "types": "vp_diffusion"}))
    finally:
        FAMILIES.pop("lagged_flow")
