"""Kinetic Langevin diffusion (KLDM): the closed-form kernel against a simulated SDE, and
a known distribution on the torus recovered by the samplers from its exact score."""

import math

import pytest
import torch

from onnes.models.processes import (
    TWO_PI,
    VPDiffusion,
    Context,
    KineticLangevin,
    signed_wrap,
    wrapped_normal_mean_gradient,
    wrapped_normal_score_norm,
)
from onnes.models.samplers import EulerMaruyama, PredictorCorrector


def simulate(s_end: float, v0: float, count: int = 40000, dt: float = 2e-3, seed: int = 0):
    """Euler-Maruyama of d theta = v ds, dv = -v ds + sqrt(2) dW from theta = 0 (unwrapped)."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.zeros(count, dtype=torch.float64)
    v = torch.full((count,), v0, dtype=torch.float64)
    for _ in range(round(s_end / dt)):
        theta = theta + v * dt
        v = v - v * dt + math.sqrt(2 * dt) * torch.randn(count, generator=gen, dtype=torch.float64)
    return theta, v


@pytest.mark.parametrize("s_end, v0", [(0.5, 0.0), (2.0, 0.0), (1.0, 0.8)])
def test_transition_kernel_matches_the_simulated_sde(s_end, v0):
    process = KineticLangevin()
    theta, v = simulate(s_end, v0)
    s = torch.tensor(s_end, dtype=torch.float64)
    # Velocities: N(e^-s v0, 1 - e^-2s).
    assert float(v.mean()) == pytest.approx(math.exp(-s_end) * v0, abs=0.02)
    assert float(v.var()) == pytest.approx(float(process.velocity_variance(s)), rel=0.03)
    # Displacement given the velocity: mean tanh(s/2) (v_s + v0), variance 2 s - 4 tanh(s/2).
    half = math.tanh(s_end / 2)
    residual = theta - half * (v + v0)
    assert float(residual.mean()) == pytest.approx(0.0, abs=0.02)
    assert float(residual.var()) == pytest.approx(float(process.position_variance(s)), rel=0.04)
    slope = float(((theta - theta.mean()) * (v - v.mean())).mean() / v.var())
    assert slope == pytest.approx(half, abs=0.03)
    assert abs(float(torch.corrcoef(torch.stack([residual, v]))[0, 1])) < 0.02  # independent of v_s


def test_corruption_draws_from_the_kernel():
    """``corrupt`` at v0 = 0: velocities and displacements with the kernel's moments,
    without net velocity per crystal."""
    process = KineticLangevin()
    crystals, atoms = 4000, 4
    ctx = Context(torch.arange(crystals).repeat_interleave(atoms), crystals)
    x1 = torch.rand(crystals * atoms, 3, generator=torch.Generator().manual_seed(1))
    t = torch.full((crystals * atoms, 1), 0.75)  # s = 0.5
    state, target = process.corrupt(x1, t, ctx, torch.Generator().manual_seed(2))
    frac, v = state[:, :3], state[:, 3:]
    s = torch.tensor(0.5, dtype=torch.float64)
    net = torch.zeros(crystals, 3).index_add_(0, ctx.crystal, v)
    assert float(net.abs().max()) < 1e-5
    # Centring n = 4 values leaves (n - 1) / n of the variance.
    assert float(v.var()) == pytest.approx(0.75 * float(process.velocity_variance(s)), rel=0.03)
    displacement = TWO_PI * signed_wrap(frac - x1).double()
    residual = displacement - math.tanh(0.25) * v.double()
    assert float(residual.var()) == pytest.approx(0.75 * float(process.position_variance(s)), rel=0.04)
    assert float(target.var()) == pytest.approx(0.75, rel=0.05)  # the simplified target has unit variance


def test_wrapped_normal_helpers():
    sigma = torch.tensor([0.05, 0.3, 1.0, 2.5], dtype=torch.float64)
    norm = wrapped_normal_score_norm(sigma)
    assert torch.allclose(norm[:2], 1 / sigma[:2] ** 2)
    # Wide: the score is small where the density is nearly flat, so the norm falls below 1/sigma^2.
    assert float(norm[2]) < 1.0 and float(norm[3]) < 0.1 / 2.5**2
    # The mean gradient is the numerical derivative of log WN with respect to the mean.
    d = torch.tensor([0.3, -2.9, 3.0], dtype=torch.float64)
    wide = torch.full_like(d, 1.3)

    def log_wn(mu):
        k = torch.arange(-6, 7, dtype=torch.float64)
        return torch.logsumexp(-((d.unsqueeze(-1) - mu + TWO_PI * k) ** 2) / (2 * 1.3**2), -1)

    numeric = (log_wn(1e-6) - log_wn(-1e-6)) / 2e-6
    assert torch.allclose(wrapped_normal_mean_gradient(d, wide, images=4), numeric, atol=1e-5)


POINTS, WEIGHTS = torch.tensor([0.2, 0.7], dtype=torch.float64), torch.tensor([0.3, 0.7], dtype=torch.float64)


def exact_network_output(process: KineticLangevin, state, t):
    """The simplified output that makes the velocity score exact for the data law
    0.3 delta(0.2) + 0.7 delta(0.7), independently in each coordinate."""
    s = process.diffusion_time(torch.tensor(t))
    frac, v = state[:, :3].double(), state[:, 3:].double()
    half, var_r = torch.tanh(s / 2), process.position_variance(s)
    sigma_r = var_r.sqrt().expand(*frac.shape, 2)
    d = TWO_PI * signed_wrap(frac.unsqueeze(-1) - POINTS) - half * v.unsqueeze(-1)  # r - mu per component
    images = torch.arange(-4, 5, dtype=torch.float64)
    log_like = torch.logsumexp(-((d.unsqueeze(-1) + TWO_PI * images) ** 2) / (2 * var_r), -1)
    posterior = torch.softmax(log_like + WEIGHTS.log(), -1)
    mean_gradient = (posterior * wrapped_normal_mean_gradient(d, sigma_r, 4)).sum(-1)
    output = mean_gradient / process.score_norm(s.reshape(1, 1)).sqrt()
    return output.float()


@pytest.mark.parametrize("corrector_steps", [0, 1])
def test_samplers_recover_a_known_distribution_on_the_torus(corrector_steps):
    # t_final 6: the positions are spread over the whole torus by then (first Fourier
    # mode e^-4.6), so the uniform prior is exact enough to test the weights.
    process = KineticLangevin(t_final=6.0, zero_net_velocity=False)
    processes = {"lattice": VPDiffusion(), "frac": process, "types": VPDiffusion()}  # stand-ins
    sampler = EulerMaruyama(processes)
    if corrector_steps:
        sampler = PredictorCorrector(sampler, corrector_steps)
    # Cells of 8 independent atoms: the corrector's step is tau / mean |score|^2 over a
    # cell, which fluctuates too much over the 3 numbers of a 1-atom cell (the weight
    # then drifts to 0.34; 0.306 at 8 atoms, 0.300 at 20).
    cells, atoms = 375, 3000
    gen = torch.Generator().manual_seed(0)
    ctx = Context(torch.arange(cells).repeat_interleave(atoms // cells), cells)
    state = (torch.zeros(cells, 6), process.prior((atoms, 3), gen, "cpu", ctx), torch.zeros(atoms, 2))

    def predict(current, t):
        return torch.zeros(cells, 6), exact_network_output(process, current[1], t), torch.zeros(atoms, 2)

    (_, final, _), _ = sampler.run(state, predict, steps=400, ctx=ctx, gen=gen)
    frac = process.finalize(final).double()
    distance = signed_wrap(frac.unsqueeze(-1) - POINTS).abs()  # (atoms, 3, 2)
    nearest = distance.min(-1)
    assert float((nearest.values < 0.02).double().mean()) > 0.97
    share_first = float((nearest.indices == 0).double().mean())
    assert share_first == pytest.approx(0.3, abs=0.02)
