"""Per-modality generative processes: how to corrupt/interpolate (training) and how to
step backwards (sampling).

One time convention for all: t in [0, 1], t = 0 is the prior (noise/base), t = 1 is data.
A process acts on one modality: the lattice (B, 6), fractional coordinates (N, 3) on
the torus, or atom types (N, K) continuous / (N,) discrete. ``ctx`` carries the crystal
index of each atom so processes can remove per-crystal means.

Families are bundles of processes (``onnes.models.families``). A process knows its corruption
(training) and its per-step update; the loop that integrates, Heun averaging, correctors
and the choice between a deterministic and a stochastic step belong to the samplers
(``onnes.models.samplers``), which hand each step its ``StepMode``. A new process is one
class given to ``register_process`` and named in a model's ``processes`` setting; it may
carry auxiliary per-atom state (``aux_dim`` columns after the coordinates, e.g. the
velocities of kinetic Langevin diffusion) that the samplers integrate and the denoiser
sees.

References: DDPM (Ho et al. 2020) with the cosine schedule (Nichol & Dhariwal 2021);
wrapped-normal score matching on the torus (Jing et al. 2022; DiffCSP, Jiao et al.
2023); flow matching on the flat torus with geodesic paths (FlowMM, Miller et al. 2024);
stochastic interpolants x_t = alpha x0 + beta x1 + gamma z and their SDE sampler
(Albergo, Boffi & Vanden-Eijnden 2023; OMatG, Hoellmer et al. 2025); absorbing-state
(masking) discrete diffusion (Austin et al. 2021; Sahoo et al. 2024).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

T_EPS = 1e-3  # training times are drawn from [T_EPS, 1 - T_EPS]
TWO_PI = 2 * math.pi


@dataclass(frozen=True)
class StepMode:
    """How a sampler asks a process to step: the deterministic (probability-flow) update
    or the stochastic one (Euler-Maruyama / exponential integrator), with the noise
    level ``noise`` where the process has a tunable one (interpolants); masked types are
    drawn at ``temperature`` and revealed in ``unmasking`` order (random, confidence or
    stratified);
    ``ddim`` gives the diffusion processes (DDPM, wrapped-normal VE) a deterministic
    step in place of their ancestral one when ``stochastic`` is false; ``anti_anneal``
    s > 0 scales the flow's coordinate velocity by 1 + s t (``TorusFlow.step``). Sampling
    settings reach a process only this way, never as its state."""

    stochastic: bool = False
    noise: float = 0.0
    temperature: float = 1.0
    unmasking: str = "random"
    ddim: bool = False
    anti_anneal: float = 0.0


ODE = StepMode()


@dataclass
class Context:
    crystal: torch.Tensor  # (N,) crystal index of each atom
    num_crystals: int


def wrap(x: torch.Tensor) -> torch.Tensor:
    """Map onto the torus [0, 1)."""
    return x - torch.floor(x)


def signed_wrap(d: torch.Tensor) -> torch.Tensor:
    """Shortest displacement on the torus, in [-0.5, 0.5): the log map of the flat torus."""
    return d - torch.round(d)


def crystal_mean(v: torch.Tensor, ctx: Context) -> torch.Tensor:
    """(num_crystals, ...) mean of per-atom rows ``v`` over each crystal's atoms."""
    sums = torch.zeros(ctx.num_crystals, *v.shape[1:], device=v.device, dtype=v.dtype).index_add_(0, ctx.crystal, v)
    counts = torch.bincount(ctx.crystal, minlength=ctx.num_crystals).clamp_min(1).to(v.dtype)
    return sums / counts.view(-1, *([1] * (v.dim() - 1)))


def remove_crystal_mean(v: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Drop the per-crystal mean: a global translation is not learnable (F is defined
    only up to translation), so removing it lowers the variance of the target."""
    return v - crystal_mean(v, ctx)[ctx.crystal]


def wrapped_normal_score(d: torch.Tensor, sigma: torch.Tensor, images: int, period: float = 1.0) -> torch.Tensor:
    """d/dx log sum_k N(x - mu + k period; 0, sigma^2) with d = x - mu: the score of a
    wrapped normal on a circle of length ``period``, summed over 2 ``images`` + 1 images."""
    k = torch.arange(-images, images + 1, device=d.device, dtype=d.dtype)
    shifted = d.unsqueeze(-1) + period * k  # (..., 2K+1)
    weights = torch.softmax(-(shifted**2) / (2 * sigma.unsqueeze(-1) ** 2), dim=-1)
    return -(weights * shifted).sum(-1) / sigma**2


def paired_or_drawn(x0: torch.Tensor | None, drawn: torch.Tensor) -> torch.Tensor:
    """The given base points ``x0`` where they are numbers, ``drawn`` where they are NaN
    (or everywhere when none is given): a batch may mix paired and unpaired rows."""
    return drawn if x0 is None else torch.where(torch.isnan(x0), drawn, x0)


def randn_like(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def cosine_alpha_bar(s: torch.Tensor) -> torch.Tensor:
    """Cosine schedule, s = diffusion time (0 data, 1 noise); Nichol & Dhariwal eq. 17."""
    offset = 0.008
    f = torch.cos((s + offset) / (1 + offset) * math.pi / 2) ** 2
    return (f / math.cos(offset / (1 + offset) * math.pi / 2) ** 2).clamp(1e-5, 1.0)


class Process:
    """Base class of a per-modality process.

    ``heads``: network output slots it needs; ``aux_dim``: auxiliary per-atom state
    columns it carries after the 3 coordinates (frac modality only); ``has_ode``: its
    step has a deterministic form (Heun's method may average two drifts; a process
    without one takes its own stochastic step under any sampler); ``has_sde``: it has
    a stochastic form a sampler may ask for; ``has_corrector``: ``correct`` is a
    Langevin corrector at fixed time.
    """

    heads = 1
    aux_dim = 0
    torus = False
    has_ode = True
    has_sde = False
    has_corrector = False
    couples = False  # corrupt() takes a given base point x0 (a coupling, e.g. reflow)
    anti_anneals = False  # step() scales its velocity by StepMode.anti_anneal's 1 + s t

    def prior(self, shape, gen, device, ctx: Context | None = None) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=device)

    def corrupt(self, x1, t, ctx, gen, x0=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, regression target) for clean data x1 at times t. ``x0``: the base point
        of each row's path, given instead of drawn from the prior (a coupling of noise
        and data, e.g. reflow's teacher pairs; rows of NaN draw their own); only
        processes with ``couples`` take it."""
        raise NotImplementedError

    def loss(self, pred, target, t) -> torch.Tensor:
        """Per-element loss, shape (rows,)."""
        return ((pred - target) ** 2).mean(-1)

    def step(self, x, pred, t, dt, ctx, gen, mode: StepMode = ODE) -> torch.Tensor:
        """One update from t to t + dt given the network's prediction at (x, t)."""
        raise NotImplementedError

    def correct(self, x, pred, t, ctx, gen, step_size: float | None = None) -> torch.Tensor:
        """One corrector move at fixed t (``step_size`` None: the process's default)."""
        return x

    def check_mode(self, mode: StepMode) -> None:
        """Raise a clear error when this process cannot take a step of this mode."""
        if mode.stochastic and self.has_ode and not self.has_sde:
            raise ValueError(f"{type(self).__name__} has no stochastic sampler: use sample.sampler: ode")

    def finalize(self, x) -> torch.Tensor:
        return wrap(x) if self.torus else x


# -- diffusion ---------------------------------------------------------------------


class VPDiffusion(Process):
    """Variance-preserving DDPM with the cosine schedule; the network predicts the noise.

    Sampling uses the posterior q(x_{s-ds} | x_s, x0) with x0 estimated from the
    predicted noise and clipped to +-``clip`` standard deviations of the standardised data
    (Ho et al. 2020, eqs. 6-7): exact for
    any step size, and robust when the estimate is poor early in sampling. With
    ``mode.ddim`` (and no ``mode.stochastic``) the step is DDIM's deterministic one
    instead (Song, Meng & Ermon 2021, eq. 12 with eta = 0): the same clipped x0 and the
    noise it implies, carried to the next noise level without fresh noise.
    """

    has_ode = False  # the ancestral step is the only one

    def __init__(self, clip: float = 3.0):
        self.clip = clip

    def corrupt(self, x1, t, ctx, gen):
        alpha_bar = cosine_alpha_bar(1 - t)
        eps = randn_like(x1, gen)
        return alpha_bar.sqrt() * x1 + (1 - alpha_bar).sqrt() * eps, eps

    def step(self, x, pred, t, dt, ctx, gen, mode=ODE):
        ab_now, ab_next = cosine_alpha_bar(1 - t), cosine_alpha_bar((1 - t - dt).clamp_min(0))
        x0 = ((x - (1 - ab_now).sqrt() * pred) / ab_now.sqrt()).clamp(-self.clip, self.clip)
        if mode.ddim and not mode.stochastic:
            eps = (x - ab_now.sqrt() * x0) / (1 - ab_now).sqrt()
            return ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        alpha = ab_now / ab_next
        beta = 1 - alpha
        mean = (ab_next.sqrt() * beta * x0 + alpha.sqrt() * (1 - ab_next) * x) / (1 - ab_now)
        variance = beta * (1 - ab_next) / (1 - ab_now)
        return mean + variance.clamp_min(0).sqrt() * randn_like(x, gen)


class WrappedNormalVE(Process):
    """Variance-exploding wrapped-normal diffusion on the torus (DiffCSP).

    sigma(s) = sigma_min^(1-s) sigma_max^s; the network predicts sigma * score of the
    wrapped normal (order one at every noise level); predictor = reverse VE step,
    corrector = annealed Langevin (step_size * (sigma / sigma_min)^2, step_size 1e-5
    by default as in DiffCSP). With ``mode.ddim`` (no ``mode.stochastic``) the
    predictor is the probability-flow ODE dx/dsigma = -sigma score in one Euler step
    in sigma (DDIM for VE; Karras et al. 2022, eq. 4): x + (sigma_now - sigma_next) pred,
    since pred = sigma score is minus the noise where the wrapping is negligible.
    """

    has_ode = False
    has_corrector = True
    torus = True
    default_step_size = 1e-5

    def __init__(self, sigma_min: float = 0.005, sigma_max: float = 0.5, images: int = 3):
        self.sigma_min, self.sigma_max, self.images = sigma_min, sigma_max, images

    def sigma(self, t):
        s = 1 - t
        return self.sigma_min ** (1 - s) * self.sigma_max**s

    def prior(self, shape, gen, device, ctx=None):
        return torch.rand(shape, generator=gen, device=device)

    def wrapped_normal_score(self, d, sigma):
        """d/dx log sum_k N(x - mu + k; 0, sigma^2), d = x - mu."""
        return wrapped_normal_score(d, sigma, self.images)

    def corrupt(self, x1, t, ctx, gen):
        sigma = self.sigma(t)
        xt = wrap(x1 + sigma * randn_like(x1, gen))
        target = sigma * self.wrapped_normal_score(signed_wrap(xt - x1), sigma)
        return xt, target

    def step(self, x, pred, t, dt, ctx, gen, mode=ODE):
        sigma_now, sigma_next = self.sigma(t), self.sigma((t + dt).clamp_max(1.0))
        if mode.ddim and not mode.stochastic:
            return wrap(x + (sigma_now - sigma_next) * pred)
        var = (sigma_now**2 - sigma_next**2).clamp_min(0)
        score = pred / sigma_now
        return wrap(x + var * score + var.sqrt() * randn_like(x, gen))

    def correct(self, x, pred, t, ctx, gen, step_size=None):
        sigma = self.sigma(t)
        step = (step_size or self.default_step_size) * (sigma / self.sigma_min) ** 2
        return wrap(x + step * pred / sigma + (2 * step).sqrt() * randn_like(x, gen))


# -- flow matching -----------------------------------------------------------------


class LinearFlow(Process):
    """Conditional flow matching, straight paths from a standard-normal base; the base
    of the standardised lattice parameters is the fitted log-normal (FlowMM)."""

    couples = True

    def corrupt(self, x1, t, ctx, gen, x0=None):
        x0 = paired_or_drawn(x0, randn_like(x1, gen))
        return (1 - t) * x0 + t * x1, x1 - x0

    def step(self, x, pred, t, dt, ctx, gen, mode=ODE):
        return x + dt * pred


class TorusFlow(Process):
    """Flow matching on the flat torus: uniform base, geodesic paths
    x_t = x0 + t log_x0(x1); target velocity log_x0(x1) without its crystal mean."""

    torus = True
    couples = True
    anti_anneals = True

    def prior(self, shape, gen, device, ctx=None):
        return torch.rand(shape, generator=gen, device=device)

    def corrupt(self, x1, t, ctx, gen, x0=None):
        x0 = paired_or_drawn(x0, torch.rand(x1.shape, generator=gen, device=x1.device, dtype=x1.dtype))
        delta = signed_wrap(x1 - x0)
        return wrap(x0 + t * delta), remove_crystal_mean(delta, ctx)

    # Variance of log_x0(x1) per axis for a uniform base: uniform on [-1/2, 1/2).
    TARGET_VARIANCE = 1.0 / 12.0

    def loss(self, pred, target, t):
        # Regress the velocity in units of its own spread, as DiffCSP scales its score
        # targets to unit variance. Unscaled, the coordinate loss (~0.075 against the
        # type and lattice losses' ~1) lost every step to them: the quality preset's flow
        # kept the zero velocity for 40,000 steps (docs/results/few_step.md).
        return super().loss(pred, target, t) / self.TARGET_VARIANCE

    def step(self, x, pred, t, dt, ctx, gen, mode=ODE):
        if mode.anti_anneal:
            # FlowMM's inference anti-annealing (Miller et al. 2024): the velocity scaled
            # by 1 + s t. The velocity estimates E[x1 - x_t | x_t] / (1 - t), so a step is
            # capped at 1 - t, the endpoint it predicts: uncapped, a few large steps near
            # t = 1 would carry atoms past it.
            dt = torch.minimum(dt * (1 + mode.anti_anneal * t), torch.maximum(1 - t, dt))
        return wrap(x + dt * pred)


# -- stochastic interpolants -------------------------------------------------------

Schedule = Callable[[torch.Tensor], torch.Tensor]


def _interpolant_coefficients(kind: str) -> tuple[Schedule, Schedule]:
    """(alpha, beta) with alpha(0) = 1, beta(0) = 0, alpha(1) = 0, beta(1) = 1."""
    if kind == "linear":
        return (lambda t: 1 - t), (lambda t: t)
    if kind == "trig":
        return (lambda t: torch.cos(math.pi * t / 2)), (lambda t: torch.sin(math.pi * t / 2))
    if kind == "encoder_decoder":
        # Data -> noise -> data: alpha vanishes after t = 1/2, beta before (OMatG).
        return (
            lambda t: torch.where(t < 0.5, torch.cos(math.pi * t) ** 2, torch.zeros_like(t)),
            lambda t: torch.where(t >= 0.5, torch.cos(math.pi * t) ** 2, torch.zeros_like(t)),
        )
    if kind == "vp":
        # Score-based VP diffusion written as an interpolant: beta = sqrt(alpha_bar).
        return (lambda t: (1 - cosine_alpha_bar(1 - t)).sqrt()), (lambda t: cosine_alpha_bar(1 - t).sqrt())
    raise ValueError(f"unknown interpolant '{kind}'")


def _gamma(kind: str, scale: float) -> Schedule | None:
    if kind == "none":
        return None
    if kind == "bridge":  # Brownian-bridge noise, zero at both ends
        return lambda t: scale * (t * (1 - t)).clamp_min(1e-8).sqrt()
    if kind == "sin2":
        return lambda t: scale * torch.sin(math.pi * t) ** 2
    raise ValueError(f"unknown gamma '{kind}'")


def _with_derivative(fn: Schedule, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        tt = t.detach().requires_grad_(True)
        value = fn(tt)
        (grad,) = torch.autograd.grad(value.sum(), tt)
    return value.detach(), grad.detach()


class Interpolant(Process):
    """Stochastic interpolant x_t = alpha x0 + beta x1 + gamma z on Euclidean data.

    The network predicts the velocity b = alpha' x0 + beta' x1 + gamma' z and, when
    gamma > 0, the denoiser eta = z. ODE: dx = b dt. SDE with tunable noise eps:
    dx = (b - eps / gamma * eta) dt + sqrt(2 eps) dW (Albergo et al. 2023, eq. 2.33).
    """

    def __init__(self, kind: str = "linear", gamma: str = "none", gamma_scale: float = 0.1):
        self.alpha, self.beta = _interpolant_coefficients(kind)
        self.gamma = _gamma(gamma, gamma_scale)
        if kind == "encoder_decoder" and self.gamma is None:
            raise ValueError("the encoder_decoder interpolant needs gamma > 0 (x_t would vanish at t = 1/2)")
        self.heads = 2 if self.gamma is not None else 1
        self.has_sde = self.gamma is not None

    def check_mode(self, mode):
        if mode.stochastic and self.gamma is None:
            raise ValueError("SDE sampling needs a noisy interpolant: set interpolant.gamma (and retrain)")

    def _path(self, x0, x1, t, z):
        alpha, d_alpha = _with_derivative(self.alpha, t)
        beta, d_beta = _with_derivative(self.beta, t)
        xt, velocity = alpha * x0 + beta * x1, d_alpha * x0 + d_beta * x1
        if self.gamma is not None:
            gamma, d_gamma = _with_derivative(self.gamma, t)
            xt, velocity = xt + gamma * z, velocity + d_gamma * z
        return xt, velocity

    def corrupt(self, x1, t, ctx, gen):
        x0, z = randn_like(x1, gen), randn_like(x1, gen)
        xt, velocity = self._path(x0, x1, t, z)
        return xt, (torch.cat([velocity, z], -1) if self.heads == 2 else velocity)

    def _drift(self, x, pred, t, mode):
        b = pred[..., : x.shape[-1]]
        if not mode.stochastic:
            return b
        eta = pred[..., x.shape[-1]:]
        gamma = self.gamma(t).clamp_min(1e-3)
        return b - mode.noise / gamma * eta

    def step(self, x, pred, t, dt, ctx, gen, mode=ODE):
        x = x + dt * self._drift(x, pred, t, mode)
        if mode.stochastic and mode.noise > 0:
            x = x + math.sqrt(2 * mode.noise) * dt.sqrt() * randn_like(x, gen)
        return x


class PeriodicInterpolant(Interpolant):
    """The interpolant on the torus: x_t = x0 + beta log_x0(x1) + gamma z (mod 1),
    with a uniform base x0 (OMatG's periodic interpolants)."""

    torus = True

    def prior(self, shape, gen, device, ctx=None):
        return torch.rand(shape, generator=gen, device=device)

    def corrupt(self, x1, t, ctx, gen):
        x0 = torch.rand(x1.shape, generator=gen, device=x1.device, dtype=x1.dtype)
        z = randn_like(x1, gen)
        delta = signed_wrap(x1 - x0)
        beta, d_beta = _with_derivative(self.beta, t)
        xt, velocity = x0 + beta * delta, d_beta * remove_crystal_mean(delta, ctx)
        if self.gamma is not None:
            gamma, d_gamma = _with_derivative(self.gamma, t)
            xt, velocity = xt + gamma * z, velocity + d_gamma * z
        xt = wrap(xt)
        return xt, (torch.cat([velocity, z], -1) if self.heads == 2 else velocity)

    def step(self, x, pred, t, dt, ctx, gen, mode=ODE):
        return wrap(super().step(x, pred, t, dt, ctx, gen, mode))


# -- kinetic Langevin diffusion on the torus -----------------------------------------

def wrapped_normal_mean_gradient(d: torch.Tensor, sigma: torch.Tensor, images: int) -> torch.Tensor:
    """d/dmu log WN(r; mu, sigma^2) on a circle of length 2 pi, with d = r - mu: minus
    the score in r."""
    return -wrapped_normal_score(d, sigma, images, TWO_PI)


def wrapped_normal_score_norm(sigma: torch.Tensor, images: int = 4, points: int = 512) -> torch.Tensor:
    """E[(d/dr log WN(r; 0, sigma^2))^2] on a circle of length 2 pi, the variance of the
    wrapped normal's score. It is 1 / sigma^2 for a normal; the wrapped normal departs
    from that only when sigma is a sizeable part of the circle (below 0.5 the
    difference is under exp(-pi^2 / (2 sigma^2)) ~ 1e-8), so quadrature is used above."""
    sigma = sigma.double()
    norm = 1 / sigma**2
    wide = sigma > 0.5
    if wide.any():
        s = sigma[wide].unsqueeze(-1)
        r = torch.linspace(-math.pi, math.pi, points + 1, dtype=torch.float64, device=sigma.device)[:-1]
        k = torch.arange(-images, images + 1, dtype=torch.float64, device=sigma.device)
        shifted = r.unsqueeze(-1) + TWO_PI * k  # (points, images)
        density = torch.logsumexp(-(shifted**2) / (2 * s.unsqueeze(-1) ** 2), -1).exp()  # (B, points)
        score = wrapped_normal_score(r.expand_as(density), s.expand_as(density), images, TWO_PI)
        norm[wide] = (density * score**2).sum(-1) / density.sum(-1)
    return norm


class KineticLangevin(Process):
    """Kinetic Langevin diffusion of fractional coordinates (KLDM: Cornet, Bergamin et
    al., ICML 2025; trivialised momentum on Lie groups: Zhu et al. 2024).

    Positions theta = 2 pi f live on the torus of length 2 pi and carry velocities v in
    its Lie algebra (R^3). In diffusion time s = t_final (1 - t) (s = 0 is data):
        d theta = v ds,   dv = -v ds + sqrt(2) dW   (unit friction and temperature).
    With v_0 fixed the kernel is Gaussian in closed form:
        v_s ~ N(e^-s v_0, 1 - e^-2s),
        r = theta_s - theta_0 | v_0, v_s ~ N(tanh(s/2) (v_s + v_0), 2 s - 4 tanh(s/2)),
    r wrapped onto the torus, so training is simulation-free. The reverse SDE needs
    only the velocity score grad_v log p_s(theta, v). The state carries v as 3
    auxiliary columns after the coordinates; the denoiser sees them.

    Options (defaults from the paper's ablations): ``initial_velocity_scale`` 0 (atoms
    at rest, v_0 = 0); ``simplified`` (the network predicts only the wrapped-normal part
    of the score, normalised to unit variance: score = -v / sigma_v^2 + tanh(s/2)
    sqrt(N(sigma_r)) * output; needs v_0 = 0); ``zero_net_velocity`` (velocities and
    position noise without a per-crystal mean: no net translation). ``t_final`` 2 as in
    the reference implementation; at s = 2 the positions have spread by 0.2 of a cell
    and are drawn uniform, an approximation the network absorbs.
    """

    aux_dim = 3
    torus = True
    has_sde = True
    has_corrector = True
    default_step_size = 0.25  # corrector: delta = tau / mean |score|^2 per crystal

    def __init__(self, t_final: float = 2.0, initial_velocity_scale: float = 0.0, simplified: bool = True,
                 zero_net_velocity: bool = True, images: int = 4):
        if simplified and initial_velocity_scale:
            raise ValueError("the simplified parametrisation needs atoms at rest (initial_velocity_scale: 0)")
        self.t_final, self.initial_velocity_scale = t_final, initial_velocity_scale
        self.simplified, self.zero_net_velocity, self.images = simplified, zero_net_velocity, images
        self._norm_table: torch.Tensor | None = None  # N sigma_r^2 over s, built on first use

    # Schedules, in double precision: 2 s - 4 tanh(s/2) cancels to s^3 / 6 near s = 0.
    def diffusion_time(self, t: torch.Tensor) -> torch.Tensor:
        return self.t_final * (1 - t.double())

    @staticmethod
    def velocity_variance(s):
        return -torch.expm1(-2 * s)

    @staticmethod
    def position_variance(s):
        return (2 * s - 4 * torch.tanh(s / 2)).clamp_min(1e-30)

    def score_norm(self, s: torch.Tensor) -> torch.Tensor:
        """N(sigma_r(s)) (``wrapped_normal_score_norm``), from a table of N sigma^2 over s
        (smooth and 1 wherever sigma_r < 0.5), built once."""
        if self._norm_table is None:
            grid = torch.linspace(0, self.t_final, 1025, dtype=torch.float64)
            var = self.position_variance(grid)
            self._norm_table = wrapped_normal_score_norm(var.sqrt()) * var
        table = self._norm_table.to(s.device)
        position = (s / self.t_final).clamp(0, 1) * (len(table) - 1)
        low = position.floor().long().clamp_max(len(table) - 2)
        frac = position - low
        ratio = table[low] * (1 - frac) + table[low + 1] * frac
        return ratio / self.position_variance(s)

    def _noise(self, like, ctx, gen):
        z = randn_like(like, gen)
        return remove_crystal_mean(z, ctx) if self.zero_net_velocity else z

    def prior(self, shape, gen, device, ctx=None):
        frac = torch.rand(shape, generator=gen, device=device)
        velocity = torch.randn(shape, generator=gen, device=device)  # the stationary law N(0, I)
        if self.zero_net_velocity and ctx is not None:
            velocity = remove_crystal_mean(velocity, ctx)
        return torch.cat([frac, velocity], -1)

    def corrupt(self, x1, t, ctx, gen):
        s = self.diffusion_time(t)
        dtype = x1.dtype
        decay, var_v, var_r = torch.exp(-s), self.velocity_variance(s), self.position_variance(s)
        half = torch.tanh(s / 2)
        v0 = self.initial_velocity_scale * self._noise(x1, ctx, gen)
        eps_v = self._noise(x1, ctx, gen)
        v_s = (decay * v0 + var_v.sqrt() * eps_v).to(dtype)
        eps_r = self._noise(x1, ctx, gen)
        sigma_r = var_r.sqrt()
        r = half * (v_s + v0) + sigma_r * eps_r
        frac_s = wrap(x1 + (r / TWO_PI).to(dtype))
        mean_gradient = wrapped_normal_mean_gradient((sigma_r * eps_r).double(), sigma_r.expand_as(eps_r),
                                                     self.images)
        if self.zero_net_velocity:
            mean_gradient = remove_crystal_mean(mean_gradient, ctx)
        if self.simplified:
            target = mean_gradient / self.score_norm(s).sqrt()
        else:  # the whole velocity score: Gaussian part plus the wrapped-normal part
            target = -eps_v / var_v.sqrt() + half * mean_gradient
        return torch.cat([frac_s, v_s], -1), target.to(dtype)

    def velocity_score(self, v, pred, s, ctx):
        """grad_v log p_s(theta, v) from the network's output."""
        if self.simplified:
            var_v = self.velocity_variance(s)
            scale = torch.tanh(s / 2) * self.score_norm(s).sqrt()
            score = -v / var_v.to(v.dtype) + scale.to(v.dtype) * pred
        else:
            score = pred
        return remove_crystal_mean(score, ctx) if self.zero_net_velocity else score

    def step(self, x, pred, t, dt, ctx, gen, mode=ODE):
        """Exponential integrator of the reverse SDE dv = (v + 2 score) du + sqrt(2) dW
        (u = t_final - s), then theta -= h v; the probability-flow ODE halves the score
        term and drops the noise."""
        frac, v = x[:, :3], x[:, 3:]
        s, h = self.diffusion_time(t), self.t_final * dt.double()
        score = self.velocity_score(v, pred, s, ctx)
        grow = torch.exp(h)
        if mode.stochastic:
            v = grow.to(v.dtype) * v + (2 * torch.expm1(h)).to(v.dtype) * score \
                + torch.expm1(2 * h).sqrt().to(v.dtype) * self._noise(v, ctx, gen)
        else:
            v = grow.to(v.dtype) * v + torch.expm1(h).to(v.dtype) * score
        frac = wrap(frac - (h / TWO_PI).to(v.dtype) * v)
        return torch.cat([frac, v], -1)

    def correct(self, x, pred, t, ctx, gen, step_size=None):
        """Langevin move of the velocities at fixed time and positions (it samples
        p_s(v | theta)); step delta = tau / mean |score|^2 per crystal."""
        s = self.diffusion_time(t)
        if float(s.min()) <= 1e-6:  # no velocity noise left at the data end
            return x
        frac, v = x[:, :3], x[:, 3:]
        score = self.velocity_score(v, pred, s, ctx)
        mean_squared = crystal_mean(score.pow(2).mean(-1), ctx).clamp_min(1e-12)
        delta = ((step_size or self.default_step_size) / mean_squared)[ctx.crystal].unsqueeze(-1)
        v = v + delta * score + (2 * delta).sqrt() * self._noise(v, ctx, gen)
        return torch.cat([frac, v], -1)

    def finalize(self, x):
        return wrap(x[:, :3])


# -- discrete atom types -----------------------------------------------------------


class Masking(Process):
    """Absorbing-state discrete diffusion on atom types (linear schedule): at time t each
    type is revealed with probability t, else replaced by the mask token. The network
    predicts logits of the clean type; unmasking while sampling draws from them.

    Sampling knobs (no retraining, from the sampler's ``StepMode``): ``temperature``
    divides the logits before a type is drawn; ``unmasking`` picks which masked atoms
    are revealed at a step: ``random`` (each
    with probability dt / (1 - t), the exact reverse process), ``confidence`` (the same
    expected number per crystal, taken where the network is most certain: MaskGIT, Chang
    et al. 2022), so the first elements fixed in a cell are the ones the rest agree on,
    or ``stratified`` (a crystal of n atoms has round(n t) of them revealed at time t,
    chosen at random, so no two are revealed in the same step while n <= steps).

    Why stratified: atoms revealed in the same step are drawn independently from their
    marginals, which is the factorization error of few-step masked diffusion (two
    atoms revealed together need not agree on a composition). Revealed one at a time,
    each conditioned on those before it, an exact denoiser draws the exact joint law of
    the types whatever the order (masked models do not depend on the reveal times:
    Zheng et al. 2024, "Masked diffusion models are secretly time-agnostic masked
    models", their first-hitting sampler). The count revealed by time t stays the
    training law's mean, n t.
    """

    has_ode = False

    def __init__(self, num_types: int):
        self.num_types = num_types
        self.mask = num_types

    def prior(self, shape, gen, device, ctx=None):
        return torch.full(shape[:1], self.mask, dtype=torch.long, device=device)

    def corrupt(self, x1, t, ctx, gen):
        reveal = torch.rand(x1.shape, generator=gen, device=x1.device) < t.squeeze(-1)
        return torch.where(reveal, x1, torch.full_like(x1, self.mask)), x1

    def loss(self, pred, target, t):
        # Cross-entropy on all atoms (revealed ones are trivially copied by the
        # network's input; weighting only masked atoms gives the same optimum).
        return F.cross_entropy(pred.float(), target, reduction="none")

    def step(self, x, pred, t, dt, ctx, gen, mode=ODE):
        t_next = (t + dt).squeeze(-1)
        masked = x == self.mask
        p_unmask = (dt.squeeze(-1) / (1 - t.squeeze(-1)).clamp_min(1e-6)).clamp(0, 1)
        p_unmask = torch.where(t_next >= 1 - 1e-6, torch.ones_like(p_unmask), p_unmask)
        probs = torch.softmax(pred.float() / mode.temperature, -1)
        drawn = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
        if mode.unmasking == "random":
            unmask = masked & (torch.rand(x.shape, generator=gen, device=x.device) < p_unmask)
        elif mode.unmasking == "confidence":
            # Per crystal, round(p * masked count) (stochastically rounded) of its masked
            # atoms: those whose drawn type has the highest probability.
            expected = torch.zeros(ctx.num_crystals, device=x.device).index_add_(0, ctx.crystal, masked * p_unmask)
            quota = torch.floor(expected + torch.rand(expected.shape, generator=gen, device=x.device))
            unmask = self._highest_per_crystal(masked, probs.gather(-1, drawn.unsqueeze(-1)).squeeze(-1), quota, ctx)
        else:
            unmask = self._highest_per_crystal(masked, torch.rand(x.shape, generator=gen, device=x.device),
                                               self._stratified_quota(masked, t_next, ctx), ctx)
        return torch.where(unmask, drawn, x)

    @staticmethod
    def _stratified_quota(masked, t_next, ctx):
        """Per crystal, how many atoms to reveal so that round(n t_next) of its n atoms
        are revealed after the step (all of them at t_next = 1)."""
        crystal, ones = ctx.crystal, torch.ones_like(t_next)
        atoms = torch.zeros(ctx.num_crystals, device=masked.device).index_add_(0, crystal, ones)
        revealed = torch.zeros_like(atoms).index_add_(0, crystal, (~masked).to(ones.dtype))
        t_crystal = torch.zeros_like(atoms).index_copy_(0, crystal, t_next)  # a crystal's atoms share one t
        target = torch.where(t_crystal >= 1 - 1e-6, atoms, torch.floor(atoms * t_crystal + 0.5))
        return (target - revealed).clamp_min(0)

    @staticmethod
    def _highest_per_crystal(masked, score, quota, ctx):
        """The ``quota[c]`` masked atoms of each crystal c with the highest ``score``
        (scores lie in [0, 1])."""
        crystal = ctx.crystal
        score = torch.where(masked, score, torch.full_like(score, -1.0))
        # Sort by crystal, then by descending score; an atom's rank within its crystal
        # is its sorted position minus the crystal's offset.
        order = torch.argsort(crystal.to(score.dtype) * 4.0 - score)
        counts = torch.bincount(crystal, minlength=ctx.num_crystals)
        offsets = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=order.device) - offsets[crystal[order]]
        return masked & (rank < quota[crystal])

    def finalize(self, x):
        return x


PROCESSES: dict[str, type[Process]] = {
    "vp_diffusion": VPDiffusion,
    "wrapped_normal_ve": WrappedNormalVE,
    "linear_flow": LinearFlow,
    "torus_flow": TorusFlow,
    "interpolant": Interpolant,
    "periodic_interpolant": PeriodicInterpolant,
    "masking": Masking,
    "kinetic_langevin": KineticLangevin,
}


def register_process(name: str, cls: type[Process]) -> None:
    """Make a process class available to models by name (``processes: {frac: {name: ...}}``)."""
    if not (isinstance(cls, type) and issubclass(cls, Process)):
        raise TypeError(f"{cls!r} is not a Process subclass")
    if name in PROCESSES and PROCESSES[name] is not cls:
        raise ValueError(f"a different process is already registered as '{name}'")
    PROCESSES[name] = cls


PLUGIN_GROUP = "onnes.processes"


def known_processes() -> dict[str, type[Process]]:
    """Registered processes, plus those other installed packages publish under the
    ``onnes.processes`` entry-point group (so a campaign's jobs, each a fresh
    interpreter, find a process defined outside this package)."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=PLUGIN_GROUP):
        if entry.name not in PROCESSES:
            register_process(entry.name, entry.load())
    return PROCESSES
