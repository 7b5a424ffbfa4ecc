"""Equivariant message-passing denoiser in the spirit of CSPNet (Jiao et al., DiffCSP,
NeurIPS 2023).

Inputs are chosen so the symmetries of a crystal hold by construction:
- atoms are a set: messages are summed with ``index_add`` (permutation equivariance);
- fractional coordinates enter only as differences f_j - f_i through Fourier features
  sin/cos(2 pi k d), which are invariant to a global translation and to integer shifts
  of any coordinate (periodicity);
- the lattice enters through rotation-invariant parameters (lengths, angles), so a
  rotation of the cell changes no input.
Per-atom outputs (coordinates, types) are equivariant to permutations; the lattice
output is invariant. Plain torch ops, no custom kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from onnes.models.batch import edges
from onnes.models.elements import NUM_FEATURES
from onnes.models.lattice import gram_features


@dataclass(frozen=True)
class DenoiserSpec:
    num_types: int  # vocabulary size; inputs carry one extra "mask" channel
    hidden: int = 128
    layers: int = 4
    fourier: int = 8  # frequencies per fractional axis
    time_dim: int = 64
    cond_dim: int = 0  # size of the property-conditioning vector (0: unconditional)
    heads: tuple[int, int, int] = (1, 1, 1)  # output slots for (lattice, frac, types)
    # Property adapters (MatterGen, Zeni et al. 2025): the condition enters through one
    # zero-initialised module per layer instead of the shared context, so a pretrained
    # unconditional denoiser is unchanged until the adapters learn.
    adapters: bool = False
    # Cell composition pooling: the mean type input of each cell (its composition, as far
    # as it is known at time t) is embedded into every atom's initial state, and a copy
    # term with one learned gate per atom, shared by all elements (a pointer/copy
    # mechanism, See et al. 2017), favours the elements the cell already has. Masked
    # types: logits += gate_i * log(1[element revealed in the cell] + 0.01), so at gate 1
    # an element the cell lacks is 100 times less likely than the network alone says;
    # continuous types: outputs += gate_i * mean type input. Without it an atom must learn,
    # element by element, to take an element its cell already has.
    composition: bool = False
    masked_types: bool = False  # types enter as one-hot + mask channel (masking process)
    # Chemical element descriptors (``elements.element_features``, a buffer filled from
    # the vocabulary) enter each atom's state and give the type outputs a readout
    # h W d_k shared by chemically similar elements k.
    element_features: bool = False
    # Auxiliary per-atom state of the coordinate process (kinetic Langevin: velocities),
    # embedded into each atom's initial state. Velocities are invariant to translations
    # and integer shifts and permute with their atoms, so the symmetries still hold.
    aux_dim: int = 0


def sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of t in [0, 1] (scaled to [0, 1000])."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t.unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def fourier_features(d: torch.Tensor, frequencies: int) -> torch.Tensor:
    k = torch.arange(1, frequencies + 1, device=d.device, dtype=d.dtype)
    angles = 2 * math.pi * d.unsqueeze(-1) * k  # (E, 3, K)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(1)


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.SiLU(), nn.Linear(hidden, out), nn.SiLU())


class MessageLayer(nn.Module):
    def __init__(self, hidden: int, edge_dim: int):
        super().__init__()
        self.edge = mlp(2 * hidden + edge_dim, hidden, hidden)
        self.node = mlp(2 * hidden, hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h, src, dst, edge_feats, num_atoms_per_atom):
        x = self.norm(h)
        messages = self.edge(torch.cat([x[src], x[dst], edge_feats], dim=-1))
        aggregated = torch.zeros_like(x).index_add_(0, dst, messages)
        aggregated = aggregated / (num_atoms_per_atom - 1).clamp_min(1).unsqueeze(-1)
        return h + self.node(torch.cat([x, aggregated], dim=-1))


class Denoiser(nn.Module):
    LATTICE_FEATURES = 9  # gram_features of the 6 lattice parameters

    def __init__(self, spec: DenoiserSpec):
        super().__init__()
        self.spec = spec
        h = spec.hidden
        self.type_in = nn.Linear(spec.num_types + 1, h)
        self.time_in = nn.Sequential(nn.Linear(spec.time_dim, h), nn.SiLU(), nn.Linear(h, h))
        self.lattice_in = nn.Linear(self.LATTICE_FEATURES, h)
        if spec.cond_dim:
            self.cond_in = nn.Sequential(nn.Linear(spec.cond_dim, h), nn.SiLU(), nn.Linear(h, h))
            self.null_cond = nn.Parameter(torch.zeros(h))
        if spec.adapters:
            if not spec.cond_dim:
                raise ValueError("adapters need a condition (conditioning.columns)")
            self.adapters = nn.ModuleList(self._adapter(h) for _ in range(spec.layers))
        edge_dim = 6 * spec.fourier + self.LATTICE_FEATURES
        self.layers = nn.ModuleList(MessageLayer(h, edge_dim) for _ in range(spec.layers))
        self.out_norm = nn.LayerNorm(h)
        n_lat, n_frac, n_types = spec.heads
        self.frac_out = nn.Linear(h, 3 * n_frac, bias=False)
        self.types_out = nn.Linear(h, spec.num_types * n_types)
        self.lattice_out = nn.Sequential(nn.Linear(h, h), nn.SiLU(), nn.Linear(h, 6 * n_lat))
        if spec.element_features:
            self.register_buffer("elements", torch.zeros(spec.num_types, NUM_FEATURES))
            self.elements_in = nn.Linear(NUM_FEATURES, h)
            self.elements_out = nn.Linear(h, NUM_FEATURES * n_types, bias=False)
        if spec.aux_dim:
            self.aux_in = nn.Sequential(nn.Linear(spec.aux_dim, h), nn.SiLU(), nn.Linear(h, h))
        if spec.composition:
            self.composition_in = nn.Linear(spec.num_types + 1, h)
            self.composition_gate = nn.Linear(h, n_types)
            nn.init.ones_(self.composition_gate.bias)  # start with the copy prior at gate 1

    @staticmethod
    def _adapter(h: int) -> nn.Sequential:
        adapter = nn.Sequential(nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h))
        nn.init.zeros_(adapter[-1].weight)
        nn.init.zeros_(adapter[-1].bias)
        return adapter

    def _copy_term(self, composition: torch.Tensor) -> torch.Tensor:
        """(B, K) per cell: for masked types (the last input channel is the mask), 0 for
        an element revealed in the cell and log(0.01) for one it lacks; for continuous
        types, the mean type input."""
        elements = composition[:, : self.spec.num_types]
        if not self.spec.masked_types:
            return elements
        return torch.log((elements > 0).to(elements.dtype) + 0.01)

    def adapter_parameters(self) -> list[nn.Parameter]:
        """What an adapter fine-tune trains: the condition embedding and the adapters."""
        return [*self.cond_in.parameters(), self.null_cond, *self.adapters.parameters()]

    def forward(
        self,
        types_in: torch.Tensor,  # (N, num_types + 1) continuous or one-hot (+ mask channel)
        frac: torch.Tensor,  # (N, 3)
        lattice_params: torch.Tensor,  # (B, 6) standardised
        t: torch.Tensor,  # (B,)
        num_atoms: torch.Tensor,  # (B,)
        crystal: torch.Tensor,  # (N,)
        cond: torch.Tensor | None = None,  # (B, P)
        drop_cond: torch.Tensor | None = None,  # (B,) bool: use the null condition
        aux: torch.Tensor | None = None,  # (N, aux_dim) auxiliary per-atom state
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src, dst = edges(num_atoms)
        lattice_feats = gram_features(lattice_params)
        context = self.time_in(sinusoidal(t, self.spec.time_dim)) + self.lattice_in(lattice_feats)
        embedded = None
        if self.spec.cond_dim:
            null = self.null_cond.expand(len(t), -1)
            if cond is None:
                embedded = null
            else:
                embedded = self.cond_in(cond)
                if drop_cond is not None:
                    embedded = torch.where(drop_cond.unsqueeze(-1), null, embedded)
            if not self.spec.adapters:
                context = context + embedded
        h = self.type_in(types_in) + context[crystal]
        if self.spec.element_features:  # a masked atom has no element yet: zero descriptors
            h = h + self.elements_in(types_in[:, : self.spec.num_types] @ self.elements)
        if self.spec.aux_dim:
            h = h + self.aux_in(aux)
        if self.spec.composition:
            composition = torch.zeros(len(num_atoms), types_in.shape[-1], device=h.device, dtype=types_in.dtype)
            composition = composition.index_add_(0, crystal, types_in) / num_atoms.unsqueeze(-1).to(types_in.dtype)
            h = h + self.composition_in(composition)[crystal]
        d = frac[dst] - frac[src]
        d = d - torch.round(d)  # minimum image on the torus, in [-0.5, 0.5]
        edge_feats = torch.cat([fourier_features(d, self.spec.fourier), lattice_feats[crystal[src]]], dim=-1)
        per_atom_n = num_atoms[crystal]
        for k, layer in enumerate(self.layers):
            if self.spec.adapters:
                h = h + self.adapters[k](embedded)[crystal]
            h = layer(h, src, dst, edge_feats, per_atom_n)
        h = self.out_norm(h)
        pooled = torch.zeros(len(num_atoms), h.shape[-1], device=h.device, dtype=h.dtype).index_add_(0, crystal, h)
        pooled = pooled / num_atoms.unsqueeze(-1).to(h.dtype)
        types = self.types_out(h)
        if self.spec.element_features:  # (N, heads, F) @ (F, K): a descriptor-space readout
            heads = self.elements_out(h).view(len(h), -1, NUM_FEATURES)
            types = types + (heads @ self.elements.T).flatten(1)
        if self.spec.composition:  # copy term: one gate per output head, shared by all elements
            gate = self.composition_gate(h)  # (N, heads)
            types = types + (gate.unsqueeze(-1) * self._copy_term(composition)[crystal].unsqueeze(1)).flatten(1)
        return self.lattice_out(pooled), self.frac_out(h), types
