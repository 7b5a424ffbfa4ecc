"""Time grids of the samplers: the grid itself, and a law with a known answer recovered
by Euler on the exact velocity of straight-path flow matching on a non-uniform grid."""

import math

import pytest
import torch

from onnes.models.families import SamplingPlan
from onnes.models.processes import Context, LinearFlow
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
