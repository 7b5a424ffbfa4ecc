"""A generative model of crystals: one denoiser + one process per modality.

``GenerativeModel.loss`` corrupts a batch at random times and scores the denoiser;
``GenerativeModel.sample`` integrates from the prior (t = 0) to data (t = 1). Which
family (diffusion, flow, interpolant) it is comes from the config alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from onnes.models.batch import CrystalBatch, crystal_index
from onnes.models.denoiser import Denoiser, DenoiserSpec
from onnes.models.elements import element_features
from onnes.models.lattice import LatticeNormalizer, matrix_from_params, params_from_matrix
from onnes.models.processes import FAMILIES, PROCESSES, T_EPS, Context, Masking, Process

MODALITIES = ("lattice", "frac", "types")


def build_processes(settings: dict[str, Any], num_types: int) -> dict[str, Process]:
    """Processes of a model from its config entry (family + optional per-modality overrides)."""
    names = dict(FAMILIES[settings["family"]])
    kwargs: dict[str, dict] = {m: {} for m in MODALITIES}
    if settings["family"] == "interpolant":
        shared = {k: settings["interpolant"][k] for k in ("kind", "gamma", "gamma_scale")}
        shared.update(sampler=settings["sample"]["sampler"], noise=settings["sample"]["noise"])
        kwargs = {m: dict(shared) for m in MODALITIES}
    if settings["family"] == "diffusion":
        kwargs["frac"] = {"corrector_steps": settings["sample"]["corrector_steps"],
                          "step_lr": settings["sample"]["step_lr"]}
    for modality, override in settings.get("processes", {}).items():
        override = dict(override)
        names[modality] = override.pop("name", names[modality])
        kwargs[modality] = override
    if settings["types"] == "masked":
        names["types"], kwargs["types"] = "masking", {"num_types": num_types,
                                                      "temperature": settings["sample"]["type_temperature"],
                                                      "order": settings["sample"]["unmasking"]}
    return {m: PROCESSES[names[m]](**kwargs[m]) for m in MODALITIES}


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
                            masked_types=isinstance(self.processes["types"], Masking), **settings["denoiser"])
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
        if cond is not None:
            cond = (self._transform_condition(cond) - self.cond_mean) / self.cond_std
        return self.denoiser(self._types_input(types_t), frac_t, lattice_t, t, num_atoms, crystal, cond, drop)

    def loss(self, batch: CrystalBatch, gen: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        device = batch.frac.device
        ctx = Context(batch.crystal, batch.num_crystals)
        t = T_EPS + (1 - 2 * T_EPS) * torch.rand(batch.num_crystals, 1, generator=gen, device=device)
        t_atoms = t[batch.crystal]
        lattice1 = self.normalizer.encode(params_from_matrix(batch.lattice, batch.num_atoms))
        lattice_t, lattice_target = self.processes["lattice"].corrupt(lattice1, t, ctx, gen)
        frac_t, frac_target = self.processes["frac"].corrupt(batch.frac, t_atoms, ctx, gen)
        types_t, types_target = self.processes["types"].corrupt(self._clean_types(batch.types), t_atoms, ctx, gen)
        drop = None
        if batch.cond is not None and self.p_uncond > 0:
            drop = torch.rand(batch.num_crystals, generator=gen, device=device) < self.p_uncond
        preds = self._net(lattice_t, frac_t, types_t, t.squeeze(-1), batch.num_atoms, batch.crystal, batch.cond, drop)
        parts = {}
        for modality, pred, target, tt in zip(
            MODALITIES, preds, (lattice_target, frac_target, types_target), (t, t_atoms, t_atoms)
        ):
            parts[modality] = self.processes[modality].loss(pred.float(), target, tt).mean()
        total = sum(self.loss_weights[m] * parts[m] for m in MODALITIES)
        return total, {f"loss_{m}": float(v.detach()) for m, v in parts.items()}

    def forward(self, batch: CrystalBatch, gen: torch.Generator | None = None):
        """The training loss (``forward`` so DistributedDataParallel syncs gradients)."""
        return self.loss(batch, gen)

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

    @torch.no_grad()
    def sample(
        self,
        num_atoms: torch.Tensor,
        steps: int,
        gen: torch.Generator | None = None,
        heun: bool = False,
        cond: torch.Tensor | None = None,
        guidance: float = 1.0,
        fixed_types: torch.Tensor | None = None,
        allowed_types: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Integrate from the prior to data. Returns (types (N,), frac (N, 3), lattice (B, 3, 3)).

        ``fixed_types`` (N,) holds the composition fixed (crystal structure prediction):
        the type modality is then clamped to it at every step. ``allowed_types``
        (num_types,) bool restricts the elements: masked types draw only allowed
        tokens; continuous types are read out by the best allowed channel.
        """
        device = num_atoms.device
        crystal = crystal_index(num_atoms)
        ctx = Context(crystal, len(num_atoms))
        n = int(num_atoms.sum())
        procs = self.processes
        lattice = procs["lattice"].prior((len(num_atoms), 6), gen, device)
        frac = procs["frac"].prior((n, 3), gen, device)
        types = procs["types"].prior((n, self.num_types), gen, device)
        clamp = None
        if fixed_types is not None:
            clamp = fixed_types if self.masked_types else F.one_hot(fixed_types, self.num_types).float()
            types = clamp
        deterministic = all(p.deterministic for p in procs.values()) and clamp is None
        dt_value = 1.0 / steps
        last_types_pred = None
        for k in range(steps):
            t = k * dt_value
            state = (lattice, frac, types)
            preds = self._predict(state, t, num_atoms, crystal, cond, guidance)
            if allowed_types is not None and self.masked_types:
                preds = (*preds[:2], preds[2].masked_fill(~allowed_types, float("-inf")))
            new_state = self._step(state, preds, t, dt_value, ctx, crystal, gen)
            if heun and deterministic and k < steps - 1:
                # Heun's method: average the drift at both ends of the step.
                ahead = self._predict(new_state, t + dt_value, num_atoms, crystal, cond, guidance)
                averaged = tuple((a + b) / 2 for a, b in zip(preds, ahead))
                new_state = self._step(state, averaged, t, dt_value, ctx, crystal, gen)
            lattice, frac, types = new_state
            if clamp is not None:
                types = clamp
            for _ in range(procs["frac"].corrector_steps):
                preds_c = self._predict((lattice, frac, types), t + dt_value, num_atoms, crystal, cond, guidance)
                t_atoms = torch.full((n, 1), t + dt_value, device=device)
                frac = procs["frac"].correct(frac, preds_c[1], t_atoms, ctx, gen)
            last_types_pred = preds[2]
        frac = procs["frac"].finalize(frac)
        if self.masked_types:
            still_masked = types == procs["types"].mask
            types = torch.where(still_masked, last_types_pred.argmax(-1), types)
        elif allowed_types is not None:
            types = types.masked_fill(~allowed_types, float("-inf")).argmax(-1)
        else:
            types = types.argmax(-1)
        params = self.normalizer.decode(procs["lattice"].finalize(lattice))
        return types, frac, matrix_from_params(params, num_atoms)

    def _step(self, state, preds, t, dt_value, ctx, crystal, gen):
        out = []
        for modality, x, pred in zip(MODALITIES, state, preds):
            rows = x.shape[0]
            t_col = torch.full((rows, 1), t, device=x.device)
            dt_col = torch.full((rows, 1), dt_value, device=x.device)
            out.append(self.processes[modality].step(x, pred.float(), t_col, dt_col, ctx, gen))
        return tuple(out)


def default_steps(settings: dict[str, Any]) -> int:
    steps = settings["sample"]["steps"]
    if steps:
        return int(steps)
    return 1000 if settings["family"] == "diffusion" else 100


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

