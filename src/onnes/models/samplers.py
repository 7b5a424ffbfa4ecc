"""Samplers: integrate a model's processes from the prior (t = 0) to data (t = 1).

A sampler owns the loop over time, the choice of a deterministic or stochastic step
(``StepMode``), Heun averaging and Langevin correctors; each process only knows its own
one-step update and, where it has one, its corrector. A model's ``SamplingPlan`` (its
sampling settings with the family's defaults, ``onnes.models.families``) chooses and
configures the sampler (``build_sampler``); it never reaches a process's constructor, so
no sampling setting can make a model fail to build or train.

- ``Euler``: one network evaluation per step, each process's deterministic update
  (processes without one, e.g. DDPM's ancestral step or unmasking, take their own).
- ``Heun``: second order for the modalities with a deterministic update: the drift is
  averaged at both ends of the step (two evaluations per step, one on the last).
- ``EulerMaruyama``: the stochastic update of each process (an Euler-Maruyama step of
  an interpolant's SDE, the exponential integrator of kinetic Langevin diffusion).
- ``PredictorCorrector``: any of the above, then ``corrector_steps`` Langevin moves of
  each modality that has a corrector (Song et al. 2021), one evaluation each.

Every sampler walks the same time grid, uniform by default; ``grid_power`` p > 1 takes
shorter steps toward the data end, t_k = 1 - (1 - k / N)^p (the polynomial schedules of
Karras et al. 2022, sec. 3, written in the processes' time), p < 1 toward the prior.
"""

from __future__ import annotations

from typing import Callable

import torch

from onnes.models.families import MODALITIES, SamplingPlan
from onnes.models.processes import ODE, Context, Process, StepMode

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Predict = Callable[[State, float], State]  # network outputs at (state, t)
Project = Callable[[State], State]  # e.g. clamp the types for structure prediction


def time_grid(steps: int, power: float = 1.0) -> list[float]:
    """The N + 1 times t_0 = 0 < t_1 < ... < t_N = 1 of ``steps`` steps:
    t_k = 1 - (1 - k / N)^power (power 1: k / N)."""
    if steps < 1 or power <= 0:
        raise ValueError("a time grid needs steps >= 1 and power > 0")
    return [1.0 - (1.0 - k / steps) ** power for k in range(steps)] + [1.0]


def column(x: torch.Tensor, value: float) -> torch.Tensor:
    """(rows of x, 1) filled with a time or step size, the shape processes take."""
    return torch.full((x.shape[0], 1), value, device=x.device)


class Sampler:
    """Base: the loop. ``advance`` makes one predictor step from the prediction at t."""

    def __init__(self, processes: dict[str, Process], mode: StepMode = ODE, grid_power: float = 1.0):
        self.processes, self.mode, self.grid_power = [processes[m] for m in MODALITIES], mode, grid_power
        for process in self.processes:
            process.check_mode(self.mode)

    def evaluations(self, steps: int) -> int:
        """Network evaluations for ``steps`` steps (for budget comparisons)."""
        return steps

    def step_all(self, state: State, preds: State, t: float, dt: float, ctx: Context, gen) -> State:
        return tuple(self._step(p, x, pred, t, dt, ctx, gen) for p, x, pred in zip(self.processes, state, preds))

    def _step(self, process, x, pred, t, dt, ctx, gen):
        return process.step(x, pred.float(), column(x, t), column(x, dt), ctx, gen, self.mode)

    def advance(self, state, preds, t, dt, last, predict, ctx, gen) -> State:
        return self.step_all(state, preds, t, dt, ctx, gen)

    def after_step(self, state, t_next, predict, ctx, gen, project) -> State:
        return state

    def run(self, state: State, predict: Predict, steps: int, ctx: Context, gen=None,
            project: Project | None = None) -> tuple[State, State]:
        """Integrate ``state`` over ``steps`` steps of the sampler's time grid; returns
        (final state, the last prediction)."""
        project = project or (lambda s: s)
        grid = time_grid(steps, self.grid_power)
        preds = None
        for k, (t, t_next) in enumerate(zip(grid, grid[1:])):
            preds = predict(state, t)
            state = project(self.advance(state, preds, t, t_next - t, k == steps - 1, predict, ctx, gen))
            state = self.after_step(state, t_next, predict, ctx, gen, project)
        return state, preds


class Euler(Sampler):
    pass


class EulerMaruyama(Sampler):
    def __init__(self, processes, mode: StepMode = StepMode(stochastic=True), grid_power: float = 1.0):
        if not mode.stochastic:
            raise ValueError("EulerMaruyama takes a stochastic StepMode")
        super().__init__(processes, mode, grid_power)


class Heun(Sampler):
    def evaluations(self, steps):
        return 2 * steps - 1

    def advance(self, state, preds, t, dt, last, predict, ctx, gen):
        new = self.step_all(state, preds, t, dt, ctx, gen)
        if last:
            return new
        ahead = predict(new, t + dt)
        return tuple(
            self._step(p, x, (a + b) / 2, t, dt, ctx, gen) if p.has_ode else n
            for p, x, a, b, n in zip(self.processes, state, preds, ahead, new)
        )


class PredictorCorrector(Sampler):
    def __init__(self, predictor: Sampler, corrector_steps: int = 1, step_size: float | None = None):
        self.predictor, self.corrector_steps, self.step_size = predictor, corrector_steps, step_size
        self.processes, self.mode, self.grid_power = predictor.processes, predictor.mode, predictor.grid_power

    def evaluations(self, steps):
        return self.predictor.evaluations(steps) + self.corrector_steps * steps

    def advance(self, *args):
        return self.predictor.advance(*args)

    def after_step(self, state, t_next, predict, ctx, gen, project):
        for _ in range(self.corrector_steps):
            preds = predict(state, t_next)
            state = project(tuple(
                p.correct(x, pred.float(), column(x, t_next), ctx, gen, self.step_size) if p.has_corrector else x
                for p, x, pred in zip(self.processes, state, preds)
            ))
        return state


def build_sampler(plan: SamplingPlan, processes: dict[str, Process]) -> Sampler:
    """The sampler a plan names: ode (Euler, or Heun with ``heun``) or sde
    (Euler-Maruyama at ``noise``) on the plan's time grid (``grid_power``), wrapped in a
    predictor-corrector when ``corrector_steps`` > 0 and a process has a corrector.
    Raises ValueError when a process cannot take the plan's steps (SDE sampling of a
    gamma-free interpolant, anti-annealing of coordinates that are not a flow's)."""
    stochastic = plan.sampler == "sde"
    if plan.anti_anneal and not processes["frac"].anti_anneals:
        raise ValueError("sample.anti_anneal scales the flow family's coordinate velocity (torus_flow); "
                         f"this model's coordinates are {type(processes['frac']).__name__}")
    mode = StepMode(stochastic=stochastic, noise=plan.noise if stochastic else 0.0,
                    temperature=plan.type_temperature, unmasking=plan.unmasking, ddim=plan.ddim,
                    anti_anneal=plan.anti_anneal)
    if mode.stochastic:
        predictor: Sampler = EulerMaruyama(processes, mode, plan.grid_power)
    else:
        predictor = (Heun if plan.heun else Euler)(processes, mode, plan.grid_power)
    if plan.corrector_steps and any(p.has_corrector for p in predictor.processes):
        return PredictorCorrector(predictor, plan.corrector_steps, plan.step_lr)
    return predictor
