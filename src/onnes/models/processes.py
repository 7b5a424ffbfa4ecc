"""Per-modality generative processes: how to corrupt/interpolate (training) and how to
step backwards (sampling).

One time convention for all: t in [0, 1], t = 0 is the prior (noise/base), t = 1 is data.
A process acts on one modality: the lattice (B, 6), fractional coordinates (N, 3) on
the torus, or atom types (N, K) continuous / (N,) discrete. ``ctx`` carries the crystal
index of each atom so processes can remove per-crystal means.

Families are bundles of processes (``FAMILIES``); a new process (e.g. kinetic Langevin
on the torus) is one class registered in ``PROCESSES`` and named in the config.

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


def remove_crystal_mean(v: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Drop the per-crystal mean: a global translation is not learnable (F is defined
    only up to translation), so removing it lowers the variance of the target."""
    sums = torch.zeros(ctx.num_crystals, v.shape[-1], device=v.device, dtype=v.dtype).index_add_(0, ctx.crystal, v)
    counts = torch.bincount(ctx.crystal, minlength=ctx.num_crystals).clamp_min(1).to(v.dtype)
    return v - (sums / counts.unsqueeze(-1))[ctx.crystal]


def randn_like(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def cosine_alpha_bar(s: torch.Tensor) -> torch.Tensor:
    """Cosine schedule, s = diffusion time (0 data, 1 noise); Nichol & Dhariwal eq. 17."""
    offset = 0.008
    f = torch.cos((s + offset) / (1 + offset) * math.pi / 2) ** 2
    return (f / math.cos(offset / (1 + offset) * math.pi / 2) ** 2).clamp(1e-5, 1.0)


class Process:
    """Base class. ``heads``: network output slots this process needs."""

    heads = 1
    deterministic = True  # an ODE step: Heun's method may average two drifts
    corrector_steps = 0
    torus = False

    def prior(self, shape, gen, device) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=device)

    def corrupt(self, x1, t, ctx, gen) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, pred, target, t) -> torch.Tensor:
        """Per-element loss, shape (rows,)."""
        return ((pred - target) ** 2).mean(-1)

    def step(self, x, pred, t, dt, ctx, gen) -> torch.Tensor:
        raise NotImplementedError

    def correct(self, x, pred, t, ctx, gen) -> torch.Tensor:
        return x

    def finalize(self, x) -> torch.Tensor:
        return wrap(x) if self.torus else x


# -- diffusion ---------------------------------------------------------------------


class VPDiffusion(Process):
    """Variance-preserving DDPM with the cosine schedule; the network predicts the noise.

    Sampling uses the posterior q(x_{s-ds} | x_s, x0) with x0 estimated from the
    predicted noise and clipped to +-``clip`` standard deviations of the standardised data
    (Ho et al. 2020, eqs. 6-7): exact for
    any step size, and robust when the estimate is poor early in sampling.
    """

    deterministic = False

    def __init__(self, clip: float = 3.0):
        self.clip = clip

    def corrupt(self, x1, t, ctx, gen):
        alpha_bar = cosine_alpha_bar(1 - t)
        eps = randn_like(x1, gen)
        return alpha_bar.sqrt() * x1 + (1 - alpha_bar).sqrt() * eps, eps

    def step(self, x, pred, t, dt, ctx, gen):
        ab_now, ab_next = cosine_alpha_bar(1 - t), cosine_alpha_bar((1 - t - dt).clamp_min(0))
        alpha = ab_now / ab_next
        beta = 1 - alpha
        x0 = ((x - (1 - ab_now).sqrt() * pred) / ab_now.sqrt()).clamp(-self.clip, self.clip)
        mean = (ab_next.sqrt() * beta * x0 + alpha.sqrt() * (1 - ab_next) * x) / (1 - ab_now)
        variance = beta * (1 - ab_next) / (1 - ab_now)
        return mean + variance.clamp_min(0).sqrt() * randn_like(x, gen)


class WrappedNormalVE(Process):
    """Variance-exploding wrapped-normal diffusion on the torus (DiffCSP).

    sigma(s) = sigma_min^(1-s) sigma_max^s; the network predicts sigma * score of the
    wrapped normal (order one at every noise level); predictor = reverse VE step,
    corrector = annealed Langevin (step_lr * (sigma / sigma_min)^2).
    """

    deterministic = False
    torus = True

    def __init__(self, sigma_min: float = 0.005, sigma_max: float = 0.5, corrector_steps: int = 1,
                 step_lr: float = 1e-5, images: int = 3):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.corrector_steps, self.step_lr, self.images = corrector_steps, step_lr, images

    def sigma(self, t):
        s = 1 - t
        return self.sigma_min ** (1 - s) * self.sigma_max**s

    def prior(self, shape, gen, device):
        return torch.rand(shape, generator=gen, device=device)

    def wrapped_normal_score(self, d, sigma):
        """d/dx log sum_k N(x - mu + k; 0, sigma^2), d = x - mu."""
        k = torch.arange(-self.images, self.images + 1, device=d.device, dtype=d.dtype)
        shifted = d.unsqueeze(-1) + k  # (..., 2K+1)
        logw = -(shifted**2) / (2 * sigma.unsqueeze(-1) ** 2)
        weights = torch.softmax(logw, dim=-1)
        return -(weights * shifted).sum(-1) / sigma**2

    def corrupt(self, x1, t, ctx, gen):
        sigma = self.sigma(t)
        xt = wrap(x1 + sigma * randn_like(x1, gen))
        target = sigma * self.wrapped_normal_score(signed_wrap(xt - x1), sigma)
        return xt, target

    def step(self, x, pred, t, dt, ctx, gen):
        sigma_now, sigma_next = self.sigma(t), self.sigma((t + dt).clamp_max(1.0))
        var = (sigma_now**2 - sigma_next**2).clamp_min(0)
        score = pred / sigma_now
        return wrap(x + var * score + var.sqrt() * randn_like(x, gen))

    def correct(self, x, pred, t, ctx, gen):
        sigma = self.sigma(t)
        step = self.step_lr * (sigma / self.sigma_min) ** 2
        return wrap(x + step * pred / sigma + (2 * step).sqrt() * randn_like(x, gen))


# -- flow matching -----------------------------------------------------------------


class LinearFlow(Process):
    """Conditional flow matching, straight paths from a standard-normal base; the base
    of the standardised lattice parameters is the fitted log-normal (FlowMM)."""

    def corrupt(self, x1, t, ctx, gen):
        x0 = randn_like(x1, gen)
        return (1 - t) * x0 + t * x1, x1 - x0

    def step(self, x, pred, t, dt, ctx, gen):
        return x + dt * pred


class TorusFlow(Process):
    """Flow matching on the flat torus: uniform base, geodesic paths
    x_t = x0 + t log_x0(x1); target velocity log_x0(x1) without its crystal mean."""

    torus = True

    def prior(self, shape, gen, device):
        return torch.rand(shape, generator=gen, device=device)

    def corrupt(self, x1, t, ctx, gen):
        x0 = torch.rand(x1.shape, generator=gen, device=x1.device, dtype=x1.dtype)
        delta = signed_wrap(x1 - x0)
        return wrap(x0 + t * delta), remove_crystal_mean(delta, ctx)

    def step(self, x, pred, t, dt, ctx, gen):
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

    def __init__(self, kind: str = "linear", gamma: str = "none", gamma_scale: float = 0.1,
                 sampler: str = "ode", noise: float = 0.0):
        self.alpha, self.beta = _interpolant_coefficients(kind)
        self.gamma = _gamma(gamma, gamma_scale)
        if kind == "encoder_decoder" and self.gamma is None:
            raise ValueError("the encoder_decoder interpolant needs gamma > 0 (x_t would vanish at t = 1/2)")
        if sampler == "sde" and self.gamma is None:
            raise ValueError("SDE sampling needs a noisy interpolant: set gamma")
        self.heads = 2 if self.gamma is not None else 1
        self.sde = sampler == "sde"
        self.deterministic = not self.sde
        self.noise = noise

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

    def _drift(self, x, pred, t):
        b = pred[..., : x.shape[-1]]
        if not self.sde:
            return b
        eta = pred[..., x.shape[-1]:]
        gamma = self.gamma(t).clamp_min(1e-3)
        return b - self.noise / gamma * eta

    def step(self, x, pred, t, dt, ctx, gen):
        x = x + dt * self._drift(x, pred, t)
        if self.sde and self.noise > 0:
            x = x + math.sqrt(2 * self.noise) * dt.sqrt() * randn_like(x, gen)
        return x


class PeriodicInterpolant(Interpolant):
    """The interpolant on the torus: x_t = x0 + beta log_x0(x1) + gamma z (mod 1),
    with a uniform base x0 (OMatG's periodic interpolants)."""

    torus = True

    def prior(self, shape, gen, device):
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

    def step(self, x, pred, t, dt, ctx, gen):
        return wrap(super().step(x, pred, t, dt, ctx, gen))


# -- discrete atom types -----------------------------------------------------------


class Masking(Process):
    """Absorbing-state discrete diffusion on atom types (linear schedule): at time t each
    type is revealed with probability t, else replaced by the mask token. The network
    predicts logits of the clean type; unmasking while sampling draws from them.

    Sampling knobs (no retraining): ``temperature`` divides the logits before a type is
    drawn; ``order`` picks which masked atoms are revealed at a step: ``random`` (each
    with probability dt / (1 - t), the exact reverse process) or ``confidence`` (the same
    expected number per crystal, taken where the network is most certain: MaskGIT, Chang
    et al. 2022), so the first elements fixed in a cell are the ones the rest agree on.
    """

    deterministic = False

    def __init__(self, num_types: int, temperature: float = 1.0, order: str = "random"):
        if order not in ("random", "confidence"):
            raise ValueError(f"unknown unmasking order '{order}' (random or confidence)")
        self.num_types = num_types
        self.mask = num_types
        self.temperature, self.order = temperature, order

    def prior(self, shape, gen, device):
        return torch.full(shape[:1], self.mask, dtype=torch.long, device=device)

    def corrupt(self, x1, t, ctx, gen):
        reveal = torch.rand(x1.shape, generator=gen, device=x1.device) < t.squeeze(-1)
        return torch.where(reveal, x1, torch.full_like(x1, self.mask)), x1

    def loss(self, pred, target, t):
        # Cross-entropy on all atoms (revealed ones are trivially copied by the
        # network's input; weighting only masked atoms gives the same optimum).
        return F.cross_entropy(pred.float(), target, reduction="none")

    def step(self, x, pred, t, dt, ctx, gen):
        t_next = (t + dt).squeeze(-1)
        masked = x == self.mask
        p_unmask = (dt.squeeze(-1) / (1 - t.squeeze(-1)).clamp_min(1e-6)).clamp(0, 1)
        p_unmask = torch.where(t_next >= 1 - 1e-6, torch.ones_like(p_unmask), p_unmask)
        probs = torch.softmax(pred.float() / self.temperature, -1)
        drawn = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
        if self.order == "random":
            unmask = masked & (torch.rand(x.shape, generator=gen, device=x.device) < p_unmask)
        else:
            unmask = self._most_confident(masked, probs.gather(-1, drawn.unsqueeze(-1)).squeeze(-1), p_unmask, ctx,
                                          gen)
        return torch.where(unmask, drawn, x)

    @staticmethod
    def _most_confident(masked, confidence, p_unmask, ctx, gen):
        """Per crystal, reveal round(p * masked count) (stochastically rounded) of its
        masked atoms: those whose drawn type has the highest probability."""
        crystal = ctx.crystal
        expected = torch.zeros(ctx.num_crystals, device=masked.device).index_add_(0, crystal, masked * p_unmask)
        quota = torch.floor(expected + torch.rand(expected.shape, generator=gen, device=masked.device))
        score = torch.where(masked, confidence, torch.full_like(confidence, -1.0))  # confidences lie in [0, 1]
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
}

# Each family: the process of each modality. "types" is the continuous-type process;
# `types: masked` in the config swaps in Masking for any family.
FAMILIES: dict[str, dict[str, str]] = {
    "diffusion": {"lattice": "vp_diffusion", "frac": "wrapped_normal_ve", "types": "vp_diffusion"},
    "flow": {"lattice": "linear_flow", "frac": "torus_flow", "types": "linear_flow"},
    "interpolant": {"lattice": "interpolant", "frac": "periodic_interpolant", "types": "interpolant"},
}
