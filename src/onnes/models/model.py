"""A generative model of crystals: one denoiser + one process per modality.

``GenerativeModel.loss`` corrupts a batch at random times and scores the denoiser;
``GenerativeModel.sample`` draws the prior and hands the integration from t = 0 to
data (t = 1) to a sampler (``onnes.models.samplers``). Which family (diffusion, flow,
interpolant, kldm) it is comes from the config alone; how it is sampled from the
sampling settings alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from onnes.models.batch import Coupling, CrystalBatch, crystal_index
from onnes.models.denoiser import Denoiser, DenoiserSpec
from onnes.models.elements import element_features
from onnes.models.lattice import LatticeNormalizer, matrix_from_params, params_from_matrix
from onnes.models.families import MODALITIES, SamplingPlan, family
from onnes.models.processes import PROCESSES, T_EPS, Context, Masking, Process, known_processes
from onnes.models.samplers import Sampler, build_sampler


def build_processes(settings: dict[str, Any], num_types: int) -> dict[str, Process]:
    """Processes of a model from its config entry (its family's processes, with the
    entry's per-modality overrides). Only architecture settings shape them; the sampling
    plan reaches them step by step (``StepMode``)."""
    specs = family(settings["family"]).process_specs(settings, num_types)
    for modality, (name, _) in specs.items():
        if name not in PROCESSES and name not in known_processes():
            raise ValueError(f"processes.{modality}: unknown process '{name}' (registered: {sorted(PROCESSES)})")
    processes = {m: PROCESSES[name](**kwargs) for m, (name, kwargs) in specs.items()}
    for modality in ("lattice", "types"):
        if processes[modality].aux_dim:
            raise ValueError(f"processes.{modality}: auxiliary per-atom state is supported on frac only")
    return processes


def uncoupled_phrase(processes: dict[str, Process]) -> str:
    """Why reflow cannot pair these processes, as a phrase ("frac process takes no
    paired base point"), or "" when it can: the modalities reflow pairs (lattice,
    coordinates) whose process takes no given base point (``Process.couples``); none
    for the flow family."""
    fixed = [m for m in ("lattice", "frac") if not processes[m].couples]
    if not fixed:
        return ""
    verb = "process takes" if len(fixed) == 1 else "processes take"
    return f"{' and '.join(fixed)} {verb} no paired base point"


class GenerativeModel(nn.Module):
    def __init__(self, settings: dict[str, Any], num_types: int, normalizer: LatticeNormalizer | None = None):
        super().__init__()
        self.settings = settings
        self.num_types = num_types
        self.processes = build_processes(settings, num_types)
        heads = tuple(self.processes[m].heads for m in MODALITIES)
        cond_columns = settings["conditioning"]["columns"]
        adapters = bool(settings.get("adapter", {}).get("base"))
        spec = DenoiserSpec(num_types=num_types, heads=heads, cond_dim=len(cond_columns), adapters=adapters,
                            masked_types=isinstance(self.processes["types"], Masking),
                            aux_dim=self.processes["frac"].aux_dim, **settings["denoiser"])
        self.denoiser = Denoiser(spec)
        if cond_columns:  # the condition is standardised with the training set's statistics
            self.register_buffer("cond_mean", torch.zeros(len(cond_columns)))
            self.register_buffer("cond_std", torch.ones(len(cond_columns)))
        self.normalizer = normalizer or LatticeNormalizer()
        self.loss_weights = settings["train"]["loss_weights"]
        self.p_uncond = settings["conditioning"]["p_uncond"]

    def _transform_condition(self, values: torch.Tensor) -> torch.Tensor:
        # log(1 + x) spreads a heavy-tailed property such as Tc (most 3DSC entries are
        # below 1 K, a few near 100 K) over a range the embedding can resolve.
        return torch.log1p(values.clamp_min(0)) if self.settings["conditioning"].get("log1p") else values

    def set_vocabulary(self, atomic_numbers) -> None:
        """Fill the element-descriptor buffer for the vocabulary (when the denoiser uses it)."""
        if self.denoiser.spec.element_features:
            features = torch.from_numpy(element_features(atomic_numbers))
            self.denoiser.elements.copy_(features.to(self.denoiser.elements.device))

    def set_condition_stats(self, values: torch.Tensor) -> None:
        values = self._transform_condition(values)
        self.cond_mean.copy_(values.mean(0))
        self.cond_std.copy_(values.std(0).nan_to_num(1.0).clamp_min(1e-6))

    def freeze_base(self) -> int:
        """Freeze everything but the adapters (adapter fine-tuning); returns the number
        of parameters left trainable."""
        self.requires_grad_(False)
        trainable = self.denoiser.adapter_parameters()
        for parameter in trainable:
            parameter.requires_grad_(True)
        return sum(p.numel() for p in trainable)

    @property
    def masked_types(self) -> bool:
        return isinstance(self.processes["types"], Masking)

    def _types_input(self, types_t: torch.Tensor) -> torch.Tensor:
        if self.masked_types:
            return F.one_hot(types_t, self.num_types + 1).float()
        return torch.cat([types_t, torch.zeros_like(types_t[:, :1])], dim=-1)

    def _clean_types(self, types: torch.Tensor) -> torch.Tensor:
        return types if self.masked_types else F.one_hot(types, self.num_types).float()

    def _net(self, lattice_t, frac_t, types_t, t, num_atoms, crystal, cond=None, drop=None):
        """Denoiser outputs; ``frac_t`` holds the coordinates and, after them, the frac
        process's auxiliary per-atom state (e.g. velocities)."""
        if cond is not None:
            cond = (self._transform_condition(cond) - self.cond_mean) / self.cond_std
        aux = frac_t[:, 3:] if self.denoiser.spec.aux_dim else None
        return self.denoiser(self._types_input(types_t), frac_t[:, :3], lattice_t, t, num_atoms, crystal, cond,
                             drop, aux)

    def corrupted(self, batch: CrystalBatch, t: torch.Tensor, gen: torch.Generator | None = None,
                  coupling: Coupling | None = None) -> tuple[tuple, tuple]:
        """The batch carried along each modality's path to the times ``t`` (one per
        crystal, shape (B, 1)): the corrupted (lattice, frac, types) and the targets the
        network regresses. With ``coupling`` (reflow), each modality whose process couples
        starts its path at the given base point (rows of NaN, crystals of the data set
        mixed in, draw theirs); masked types keep their own corruption of the batch's
        types."""
        ctx = Context(batch.crystal, batch.num_crystals)
        t_atoms = t[batch.crystal]
        base = {m: {} for m in MODALITIES}
        if coupling is None:
            lattice1 = self.normalizer.encode(params_from_matrix(batch.lattice, batch.num_atoms))
        else:
            self.check_couples()
            lattice1 = coupling.lattice1
            unpaired = torch.isnan(lattice1)  # rows of data, not of pairs: their own lattice
            if unpaired.any():
                lattice1 = torch.where(unpaired, self.normalizer.encode(params_from_matrix(batch.lattice,
                                                                                           batch.num_atoms)), lattice1)
            base["lattice"], base["frac"] = {"x0": coupling.lattice0}, {"x0": coupling.frac0}
            if coupling.types0 is not None and self.processes["types"].couples:
                base["types"] = {"x0": coupling.types0}
        lattice_t, lattice_target = self.processes["lattice"].corrupt(lattice1, t, ctx, gen, **base["lattice"])
        frac_t, frac_target = self.processes["frac"].corrupt(batch.frac, t_atoms, ctx, gen, **base["frac"])
        types_t, types_target = self.processes["types"].corrupt(self._clean_types(batch.types), t_atoms, ctx, gen,
                                                                **base["types"])
        return (lattice_t, frac_t, types_t), (lattice_target, frac_target, types_target)

    def denoise(self, state: tuple, t: torch.Tensor, batch: CrystalBatch, drop: torch.Tensor | None = None) -> tuple:
        """The network's (lattice, frac, types) outputs on a corrupted ``state`` of
        ``batch``'s crystals at times ``t`` (B, 1), under the batch's conditions
        (``drop``: crystals whose conditions are dropped)."""
        return self._net(*state, t.squeeze(-1), batch.num_atoms, batch.crystal, batch.cond, drop)

    def loss(self, batch: CrystalBatch, gen: torch.Generator | None = None,
             coupling: Coupling | None = None) -> tuple[torch.Tensor, dict]:
        """The denoising/regression loss at random times (``corrupted`` says how a
        ``coupling`` is used)."""
        device = batch.frac.device
        t = T_EPS + (1 - 2 * T_EPS) * torch.rand(batch.num_crystals, 1, generator=gen, device=device)
        t_atoms = t[batch.crystal]
        state, targets = self.corrupted(batch, t, gen, coupling)
        drop = None
        if batch.cond is not None and self.p_uncond > 0:
            drop = torch.rand(batch.num_crystals, generator=gen, device=device) < self.p_uncond
        preds = self.denoise(state, t, batch, drop)
        parts = {}
        for modality, pred, target, tt in zip(MODALITIES, preds, targets, (t, t_atoms, t_atoms)):
            parts[modality] = self.processes[modality].loss(pred.float(), target, tt).mean()
        total = sum(self.loss_weights[m] * parts[m] for m in MODALITIES)
        return total, {f"loss_{m}": float(v.detach()) for m, v in parts.items()}

    def forward(self, batch: CrystalBatch, gen: torch.Generator | None = None, coupling: Coupling | None = None):
        """The training loss (``forward`` so DistributedDataParallel syncs gradients)."""
        return self.loss(batch, gen, coupling)

    def check_couples(self) -> None:
        """Raise unless the lattice and coordinate processes take given base points
        (reflow straightens the paths of a flow; a diffusion has no base point to pair)."""
        phrase = uncoupled_phrase(self.processes)
        if phrase:
            raise ValueError(f"{self.settings['family']} model: its {phrase}; reflow needs the flow family's "
                             "processes")

    def _predict(self, state, t, num_atoms, crystal, cond, guidance):
        t_vec = torch.full((len(num_atoms),), float(t), device=num_atoms.device)
        if cond is None or guidance == 1.0:
            return self._net(*state, t_vec, num_atoms, crystal, cond)
        # Classifier-free guidance (Ho & Salimans 2022): uncond + w (cond - uncond).
        drop_all = torch.ones(len(num_atoms), dtype=torch.bool, device=num_atoms.device)
        unconditional = self._net(*state, t_vec, num_atoms, crystal, cond, drop_all)
        if guidance == 0.0:
            return unconditional
        conditional = self._net(*state, t_vec, num_atoms, crystal, cond)
        return tuple(u + guidance * (c - u) for c, u in zip(conditional, unconditional))

    def sampling_plan(self, sample_settings: dict[str, Any] | None = None) -> SamplingPlan:
        """The plan ``sample_settings`` (default: the model's own) describe, with the
        family's defaults."""
        settings = self.settings["sample"] if sample_settings is None else sample_settings
        return SamplingPlan.of(self.settings["family"], settings)

    def sampler(self, plan: SamplingPlan | None = None) -> Sampler:
        """The sampler of ``plan`` (default: the model's own sampling settings)."""
        return build_sampler(plan or self.sampling_plan(), self.processes)

    @torch.no_grad()
    def sample(
        self,
        num_atoms: torch.Tensor,
        steps: int,
        gen: torch.Generator | None = None,
        sampler: Sampler | None = None,
        cond: torch.Tensor | None = None,
        guidance: float = 1.0,
        fixed_types: torch.Tensor | None = None,
        allowed_types: torch.Tensor | None = None,
        prior: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Integrate from the prior to data. Returns (types (N,), frac (N, 3), lattice (B, 3, 3)).

        ``sampler`` defaults to the one the model's sampling settings name.
        ``fixed_types`` (N,) holds the composition fixed (crystal structure prediction):
        the type modality is then clamped to it at every step. ``allowed_types``
        (num_types,) bool restricts the elements: masked types draw only allowed
        tokens; continuous types are read out by the best allowed channel. ``prior``
        (a dict) receives the prior draw and the standardised lattice endpoint
        (``Coupling``'s fields: reflow's pairs).
        """
        sampler = sampler or self.sampler()
        device = num_atoms.device
        crystal = crystal_index(num_atoms)
        ctx = Context(crystal, len(num_atoms))
        n = int(num_atoms.sum())
        procs = self.processes
        frac_columns = 3 + procs["frac"].aux_dim
        state = (procs["lattice"].prior((len(num_atoms), 6), gen, device, ctx),
                 procs["frac"].prior((n, 3), gen, device, ctx),
                 procs["types"].prior((n, self.num_types), gen, device, ctx))
        if state[1].shape[-1] != frac_columns:
            raise ValueError(f"{type(procs['frac']).__name__}.prior must return 3 coordinates and aux_dim "
                             f"({procs['frac'].aux_dim}) auxiliary columns per atom")
        start = state
        project = None
        if fixed_types is not None:
            clamp = fixed_types if self.masked_types else F.one_hot(fixed_types, self.num_types).float()
            state = (state[0], state[1], clamp)

            def project(s):
                return s[0], s[1], clamp

        def predict(s, t):
            preds = self._predict(s, t, num_atoms, crystal, cond, guidance)
            if allowed_types is not None and self.masked_types:
                preds = (*preds[:2], preds[2].masked_fill(~allowed_types, float("-inf")))
            return preds

        (lattice, frac, types), last = sampler.run(state, predict, steps, ctx, gen, project)
        frac = procs["frac"].finalize(frac)
        if self.masked_types:
            still_masked = types == procs["types"].mask
            types = torch.where(still_masked, last[2].argmax(-1), types)
        elif allowed_types is not None:
            types = types.masked_fill(~allowed_types, float("-inf")).argmax(-1)
        else:
            types = types.argmax(-1)
        lattice = procs["lattice"].finalize(lattice)
        if prior is not None:
            prior.update(lattice0=start[0], frac0=start[1][:, :3], lattice1=lattice,
                         types0=None if self.masked_types else start[2])
        return types, frac, matrix_from_params(self.normalizer.decode(lattice), num_atoms)

    @torch.no_grad()
    def teacher_pairs(self, num_atoms: torch.Tensor, steps: int, gen: torch.Generator | None = None,
                      sampler: Sampler | None = None) -> tuple[CrystalBatch, Coupling]:
        """Crystals this model draws from its prior, each with the prior point it was
        integrated from: the training pairs of reflow (Liu et al. 2023, sec. 2.3). The
        sampler must be deterministic for the paired modalities (the ODE)."""
        self.check_couples()
        sampler = sampler or self.sampler()
        if sampler.mode.stochastic:
            raise ValueError("reflow pairs need the teacher's ODE (sample.sampler: ode), not its SDE")
        prior: dict = {}
        types, frac, lattice = self.sample(num_atoms, steps, gen, sampler=sampler, prior=prior)
        batch = CrystalBatch(types, frac, lattice, num_atoms, crystal_index(num_atoms))
        return batch, Coupling(**prior)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

