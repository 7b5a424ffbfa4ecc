"""CHGNet 0.3.0 (Deng et al., Nat. Mach. Intell. 5, 1031, 2023) through the batched path
of :mod:`onnes.mlip.chgnet_batch` (graphs from arrays, one backward pass per call).

Footing: MP2020-corrected. CHGNet is trained on MPtrj's corrected energies; applying the
corrections again doubled them (formation-energy MAE against MP-20 DFT 0.024 eV/atom
without, 0.180 with; docs/results/mlip-footing.md).
"""

from __future__ import annotations

from onnes.mlip.base import MLIP

# The weights the hull's footing was checked with; chgnet's default may move.
CHGNET_MODEL = "0.3.0"
CHGNET_MAX_Z = 94  # CHGNet's embedding covers H..Pu


class CHGNetMLIP(MLIP):
    name = "chgnet"
    footing = "mp2020"
    package = "chgnet"
    weights = f"CHGNet {CHGNET_MODEL}"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        from chgnet.model import CHGNet

        model = CHGNet.load(model_name=CHGNET_MODEL, verbose=False, use_device=device)
        model.eval()
        for parameter in model.parameters():  # inference only: the backward pass skips weight gradients (-7 % a step)
            parameter.requires_grad_(False)
        self.model = model
        self.elements = frozenset(range(1, CHGNET_MAX_Z + 1))

    def prepare(self, numbers, frac, lattice):
        from onnes.mlip.chgnet_batch import crystal_graph

        return crystal_graph(self.model, numbers, frac, lattice)

    def evaluate(self, prepared):
        from onnes.mlip.chgnet_batch import energies_forces_stresses

        return energies_forces_stresses(self.model, prepared)
