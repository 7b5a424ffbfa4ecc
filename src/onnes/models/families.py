"""Model families and sampling plans: plain records, no torch.

A ``Family`` says everything a family decides: the registered process of each modality,
which config block every process shares (the interpolant's schedule), and how the family
samples unless the config says otherwise (sampler and number of steps). ``FAMILIES`` is
the one registry; the config schema's ``family`` enum lists the same names (a test
keeps them equal).

A ``SamplingPlan`` is a model's ``sample`` settings read once, with the family's
defaults filled in and checked: the sampler builds from it, and the plan's unmasking
knobs travel to the type process with each step (``StepMode``), never stored on it.
Nothing here imports torch, so the config check runs it in every Snakemake process.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

MODALITIES = ("lattice", "frac", "types")
SAMPLERS = ("ode", "sde")
UNMASKING_ORDERS = ("random", "confidence", "stratified")


@dataclass(frozen=True)
class Family:
    """One generative family: a process per modality and its sampling defaults.

    ``shared``: (config block, its keys) handed to every modality's process as keyword
    arguments, for a family whose processes share one schedule (the interpolant's
    alpha, beta, gamma)."""

    name: str
    processes: Mapping[str, str]
    sampler: str = "ode"
    steps: int = 100
    shared: tuple[str, tuple[str, ...]] | None = None
    reference: str = ""

    def __post_init__(self):
        if tuple(sorted(self.processes)) != tuple(sorted(MODALITIES)):
            raise ValueError(f"family {self.name}: one process per modality {MODALITIES}, got {sorted(self.processes)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"family {self.name}: default sampler '{self.sampler}' is not one of {SAMPLERS}")
        if self.steps < 1:
            raise ValueError(f"family {self.name}: default steps must be >= 1")
        object.__setattr__(self, "processes", MappingProxyType(dict(self.processes)))

    def process_specs(self, settings: Mapping[str, Any], num_types: int) -> dict[str, tuple[str, dict]]:
        """(registered process name, keyword arguments) per modality for a model's config
        entry: the family's processes, its shared block, the entry's per-modality
        ``processes`` overrides, and masking for the types when ``types: masked``."""
        names = dict(self.processes)
        kwargs: dict[str, dict] = {m: {} for m in MODALITIES}
        if self.shared:
            block, keys = self.shared
            kwargs = {m: {k: settings[block][k] for k in keys} for m in MODALITIES}
        for modality, override in settings.get("processes", {}).items():
            override = dict(override)
            names[modality] = override.pop("name", names[modality])
            kwargs[modality] = override
        if settings["types"] == "masked":
            names["types"], kwargs["types"] = "masking", {"num_types": num_types}
        return {m: (names[m], kwargs[m]) for m in MODALITIES}


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add a family to the registry (its processes must be registered processes when a
    model of it is built). The schema's ``family`` enum must name it too."""
    if family.name in FAMILIES and FAMILIES[family.name] != family:
        raise ValueError(f"a different family is already registered as '{family.name}'")
    FAMILIES[family.name] = family
    return family


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family '{name}' (known: {', '.join(sorted(FAMILIES))})") from None


register_family(Family(
    "diffusion", {"lattice": "vp_diffusion", "frac": "wrapped_normal_ve", "types": "vp_diffusion"}, steps=1000,
    reference="DiffCSP (Jiao et al. 2023): VP DDPM on L and A, wrapped-normal VE on F"))
register_family(Family(
    "flow", {"lattice": "linear_flow", "frac": "torus_flow", "types": "linear_flow"}, steps=100,
    reference="FlowMM (Miller et al. 2024): straight paths on L and A, geodesics on the torus"))
register_family(Family(
    "interpolant", {"lattice": "interpolant", "frac": "periodic_interpolant", "types": "interpolant"}, steps=100,
    shared=("interpolant", ("kind", "gamma", "gamma_scale")),
    reference="OMatG (Hoellmer et al. 2025): x_t = alpha x0 + beta x1 + gamma z"))
# KLDM: kinetic Langevin on coordinates, sampled by its exponential integrator (the
# paper's EM sampler); lattice and continuous types as the diffusion family (VP DDPM).
register_family(Family(
    "kldm", {"lattice": "vp_diffusion", "frac": "kinetic_langevin", "types": "vp_diffusion"}, sampler="sde",
    steps=1000, reference="KLDM (Cornet et al. 2025): velocities on the torus's Lie algebra"))


@dataclass(frozen=True)
class SamplingPlan:
    """How a model is sampled, read once from its ``sample`` settings.

    ``sampler`` ode (Euler, or Heun with ``heun``) or sde (Euler-Maruyama with
    ``noise``); ``corrector_steps`` Langevin moves after each step for the processes that
    have a corrector (``step_lr`` their step size, None: the process's own); masked types
    are drawn at ``type_temperature`` and revealed in ``unmasking`` order; the steps
    follow the time grid t_k = 1 - (1 - k / steps)^``grid_power`` (1: uniform); ``ddim``
    gives the diffusion processes DDIM's deterministic step under the ode sampler;
    ``anti_anneal`` s > 0 scales the flow's coordinate velocity by 1 + s t (FlowMM's
    inference anti-annealing, each step capped at the endpoint it predicts)."""

    sampler: str
    steps: int
    heun: bool = False
    noise: float = 0.0
    corrector_steps: int = 0
    step_lr: float | None = None
    type_temperature: float = 1.0
    unmasking: str = "random"
    grid_power: float = 1.0
    ddim: bool = False
    anti_anneal: float = 0.0

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler '{self.sampler}' (ode or sde)")
        if self.heun and self.sampler != "ode":
            raise ValueError("Heun's method is for sample.sampler: ode")
        if self.ddim and self.sampler != "ode":
            raise ValueError("DDIM's deterministic step is for sample.sampler: ode")
        if self.steps < 1 or self.corrector_steps < 0 or self.noise < 0:
            raise ValueError("sample.steps must be >= 1, corrector_steps and noise >= 0")
        if self.type_temperature <= 0:
            raise ValueError("sample.type_temperature must be > 0")
        if self.grid_power <= 0:
            raise ValueError("sample.grid_power must be > 0")
        if self.anti_anneal < 0:
            raise ValueError("sample.anti_anneal must be >= 0")
        if self.unmasking not in UNMASKING_ORDERS:
            raise ValueError(f"unknown unmasking order '{self.unmasking}' ({', '.join(UNMASKING_ORDERS)})")

    @classmethod
    def of(cls, family_name: str, sample: Mapping[str, Any]) -> SamplingPlan:
        """The plan of a model of ``family_name`` with sampling settings ``sample`` (a
        config entry's ``sample`` block; keys left out take the family's defaults)."""
        defaults = family(family_name)
        return cls(sampler=sample.get("sampler") or defaults.sampler,
                   steps=int(sample.get("steps") or defaults.steps),
                   heun=bool(sample.get("heun", False)),
                   noise=float(sample.get("noise", 0.0)),
                   corrector_steps=int(sample.get("corrector_steps", 0)),
                   step_lr=sample.get("step_lr"),
                   type_temperature=float(sample.get("type_temperature", 1.0)),
                   unmasking=sample.get("unmasking", "random"),
                   grid_power=float(sample.get("grid_power", 1.0)),
                   ddim=bool(sample.get("ddim", False)),
                   anti_anneal=float(sample.get("anti_anneal", 0.0)))
