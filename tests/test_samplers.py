"""Time grids of the samplers: the grid itself, and a law with a known answer recovered
by Euler on the exact velocity of straight-path flow matching on a non-uniform grid;
DDIM's deterministic step of the diffusion processes on laws with known answers."""

import math

import pytest
import torch

from onnes.models.families import SamplingPlan
from onnes.models.processes import Context, LinearFlow, StepMode, TorusFlow, VPDiffusion, WrappedNormalVE, \
    cosine_alpha_bar, signed_wrap, wrap
from onnes.models.samplers import Euler, build_sampler, time_grid

POINTS, WEIGHTS = torch.tensor([-1.0, 2.0], dtype=torch.float64), torch.tensor([0.3, 0.7], dtype=torch.float64)


def exact_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    """E[x1 - x0 | x_t] for x_t = (1 - t) x0 + t x1, x0 ~ N(0, 1), x1 ~ 0.3 delta(-1) +
    0.7 delta(2): (E[x1 | x_t] - x_t) / (1 - t), the posterior over the two points from
    x_t | x1 ~ N(t x1, (1 - t)^2)."""
    x = x.double()
    log_like = -((x.unsqueeze(-1) - t * POINTS) ** 2) / (2 * (1 - t) ** 2)
    posterior = torch.softmax(log_like + WEIGHTS.log(), -1)
    return (((posterior * POINTS).sum(-1) - x) / (1 - t)).float()


def straight_paths() -> dict[str, LinearFlow]:
    """Straight-path flow matching on every modality: the toy law lives on the lattice's."""
    return {"lattice": LinearFlow(), "frac": LinearFlow(), "types": LinearFlow()}


def sample_toy(steps: int, power: float, count: int = 20000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    ctx = Context(torch.arange(count), count)
    state = (torch.randn(count, 1, generator=gen), torch.zeros(count, 3), torch.zeros(count, 2))

    def predict(current, t):
        return exact_velocity(current[0], t), torch.zeros(count, 3), torch.zeros(count, 2)

    (final, _, _), _ = Euler(straight_paths(), grid_power=power).run(state, predict, steps, ctx, gen)
    return final.squeeze(-1).double()


def test_time_grid_runs_from_prior_to_data_and_is_uniform_at_power_one():
    assert time_grid(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    grid = time_grid(16, 2.0)
    steps = [b - a for a, b in zip(grid, grid[1:])]
    assert grid[0] == 0.0 and grid[-1] == 1.0
    assert all(later < earlier for earlier, later in zip(steps, steps[1:]))  # shorter toward the data
    assert steps[-1] == pytest.approx(1 / 256)
    slow_start = time_grid(8, 0.5)
    assert slow_start[1] == pytest.approx(1 - math.sqrt(7 / 8))
    with pytest.raises(ValueError):
        time_grid(8, 0.0)
    with pytest.raises(ValueError, match="grid_power"):
        SamplingPlan.of("flow", {"grid_power": -1})
    assert build_sampler(SamplingPlan.of("flow", {"grid_power": 3}), straight_paths()).grid_power == 3.0


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_euler_on_the_exact_velocity_recovers_a_two_point_law(power):
    final = sample_toy(64, power)
    nearest = (final.unsqueeze(-1) - POINTS).abs().min(-1)
    assert float((nearest.values < 0.05).double().mean()) > 0.97
    assert float((nearest.indices == 0).double().mean()) == pytest.approx(0.3, abs=0.015)


def test_a_grid_dense_at_the_data_end_trades_sharp_ends_for_misplaced_weight():
    # Euler's last step lands on the posterior mean at t_{N-1}: the closer t_{N-1} is to
    # 1, the sharper that posterior, so fewer samples end between the two points. The
    # price is the long first steps, which move mass to the wrong point: at 4 steps the
    # uniform grid's weight of -1 is closer to 0.3. Which wins on crystals is measured
    # (docs/results/few_step.md), not assumed.
    def figures(power):
        final = sample_toy(4, power)
        nearest = (final.unsqueeze(-1) - POINTS).abs().min(-1)
        return float((nearest.values > 0.05).double().mean()), float((nearest.indices == 0).double().mean())

    (stranded_uniform, weight_uniform), (stranded_dense, weight_dense) = figures(1.0), figures(2.0)
    assert stranded_dense < stranded_uniform / 10 and stranded_uniform > 0.02
    assert abs(weight_uniform - 0.3) < abs(weight_dense - 0.3) - 0.02


DDIM = StepMode(ddim=True)


def vp_ddim(x: torch.Tensor, noise_of, steps: int) -> torch.Tensor:
    """Walk a DDPM's deterministic (DDIM) steps from x at t = 0 with the noise predictor
    noise_of(x, alpha_bar); no generator, so a stray random draw would fail. The loop is
    the process's own, not Sampler.run's, because Sampler.run hands steps float32 times
    and predictions, and the exactness checked here needs float64 (alpha_bar starts at
    1e-5)."""
    process, ctx = VPDiffusion(clip=10.0), Context(torch.arange(len(x)), len(x))
    for t, t_next in zip(time_grid(steps), time_grid(steps)[1:]):
        tt = torch.full((len(x), 1), t, dtype=x.dtype)
        x = process.step(x, noise_of(x, cosine_alpha_bar(1 - tt)), tt, torch.full_like(tt, t_next - t), ctx, None, DDIM)
    return x


def test_ddim_lands_on_a_point_mass_in_any_number_of_steps():
    # With the exact noise of a point mass m the estimate of x0 is m at every step and
    # the last step (alpha_bar = 1) returns it: exact whatever the number of steps.
    m, x = 0.7, torch.randn(500, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for steps in (1, 4, 16):
        final = vp_ddim(x, lambda x, ab: (x - ab.sqrt() * m) / (1 - ab).sqrt(), steps)
        assert torch.allclose(final, torch.full_like(final, m), atol=1e-5)


def test_ddim_carries_the_prior_to_a_gaussian_law_at_first_order():
    # Data N(m, s^2): E[noise | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) m) / (ab s^2 + 1 - ab).
    # The probability-flow map is linear: the prior draws x (spread 0.987 here) go to
    # m + s x. DDIM is a first-order integrator: a few steps shrink the spread (by 14 %
    # at 16 steps on this narrow law), the error falls like 1 / steps.
    m, s = 0.5, 0.3
    x = torch.randn(20000, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def spread_error(steps):
        final = vp_ddim(x, lambda x, ab: (1 - ab).sqrt() * (x - ab.sqrt() * m) / (ab * s**2 + 1 - ab), steps)
        assert float(final.mean()) == pytest.approx(m, abs=0.002)
        return 1 - float(final.std()) / (s * float(x.std()))

    coarse, fine = spread_error(64), spread_error(256)
    assert 0 < fine < 0.015 and 3 * fine < coarse < 5 * fine
    # Deterministic: the same prior draws give the same samples (no noise injected).
    assert spread_error(64) == coarse


def test_ddim_on_the_torus_contracts_the_wrapped_normal_to_its_centre():
    # Point mass mu on the torus, sigma_max small enough that the images do not matter:
    # x = mu + sigma_max z, pred = sigma score = -z, so each step keeps z and shrinks
    # sigma: the result is mu + sigma_min z, wrapped, exactly (the ancestral step would
    # draw fresh noise instead).
    process = WrappedNormalVE(sigma_min=0.005, sigma_max=0.05)
    gen = torch.Generator().manual_seed(3)
    mu = torch.rand(300, 3, generator=gen, dtype=torch.float64)
    z = torch.randn(300, 3, generator=gen, dtype=torch.float64)
    x, ctx = wrap(mu + 0.05 * z), Context(torch.arange(300), 300)
    for t, t_next in zip(time_grid(8), time_grid(8)[1:]):
        tt = torch.full((300, 1), t, dtype=torch.float64)
        sigma = process.sigma(tt)
        pred = sigma * process.wrapped_normal_score(signed_wrap(x - mu), sigma)
        x = process.step(x, pred, tt, torch.full_like(tt, t_next - t), ctx, None, DDIM)
    assert torch.allclose(signed_wrap(x - mu), 0.005 * z, atol=1e-9)


def test_ddim_is_an_ode_sampler_option():
    assert build_sampler(SamplingPlan.of("diffusion", {"ddim": True}), straight_paths()).mode.ddim
    assert not build_sampler(SamplingPlan.of("diffusion", {}), straight_paths()).mode.ddim
    with pytest.raises(ValueError, match="DDIM"):
        SamplingPlan.of("diffusion", {"ddim": True, "sampler": "sde"})


def torus_point_mass_run(centre, x, steps: int, anti_anneal: float) -> list[torch.Tensor]:
    """Euler on the exact torus-flow velocity of a point mass at ``centre``, signed_wrap(c
    - x) / (1 - t) (the rest of the geodesic in the time left); the state after each step."""
    process, mode = TorusFlow(), StepMode(anti_anneal=anti_anneal)
    ctx, states = Context(torch.arange(len(x)), len(x)), []
    for t, t_next in zip(time_grid(steps), time_grid(steps)[1:]):
        tt = torch.full((len(x), 1), t, dtype=x.dtype)
        velocity = signed_wrap(centre - x) / (1 - tt)
        x = process.step(x, velocity, tt, torch.full_like(tt, t_next - t), ctx, None, mode)
        states.append(x)
    return states


def test_anti_annealing_moves_the_coordinates_sooner_and_never_past_the_predicted_end():
    # A step at t moves min(dt (1 + s t), 1 - t) along the velocity: the fraction of the
    # way left that it covers is min(dt (1 + s t) / (1 - t), 1), so on a point mass the
    # distance left after each step is known in closed form, and the last step (or the
    # first whose scaled step reaches 1 - t) lands on the point: no overshoot, whatever s.
    gen = torch.Generator().manual_seed(4)
    centre = torch.rand(200, 3, generator=gen, dtype=torch.float64)
    start = torch.rand(200, 3, generator=gen, dtype=torch.float64)
    distance = signed_wrap(centre - start).abs()
    for steps in (1, 4, 16):
        for s in (0.0, 3.0, 10.0):
            states = torus_point_mass_run(centre, start, steps, s)
            left = 1.0
            for (t, t_next), state in zip(zip(time_grid(steps), time_grid(steps)[1:]), states):
                left *= 1 - min((t_next - t) * (1 + s * t) / (1 - t), 1.0)
                assert torch.allclose(signed_wrap(centre - state).abs(), left * distance, atol=1e-12)
            assert torch.allclose(signed_wrap(centre - states[-1]), torch.zeros_like(start), atol=1e-12)
    # s = 0 is Euler; s > 0 is sooner: half-way through 16 steps at s = 3 the atoms have
    # 28.2 % of the way left, against plain Euler's 50 %.
    plain, sooner = torus_point_mass_run(centre, start, 16, 0.0), torus_point_mass_run(centre, start, 16, 3.0)
    ratio = signed_wrap(centre - sooner[7]).abs().sum() / signed_wrap(centre - plain[7]).abs().sum()
    assert float(ratio) == pytest.approx(0.282 / 0.5, abs=1e-3)


def test_anti_annealing_is_a_flow_coordinate_option():
    plan = SamplingPlan.of("flow", {"anti_anneal": 3})
    assert build_sampler(plan, {"lattice": LinearFlow(), "frac": TorusFlow(), "types": LinearFlow()}).mode.anti_anneal == 3
    with pytest.raises(ValueError, match="anti_anneal"):
        SamplingPlan.of("flow", {"anti_anneal": -1})
    with pytest.raises(ValueError, match="anti_anneal"):  # coordinates that are not a torus flow
        build_sampler(plan, straight_paths())
