"""SevenNet (Park et al., J. Chem. Theory Comput. 20, 4857, 2024) from the checkpoints
that ship inside the ``sevenn`` wheel: SevenNet-0 (11Jul2024) and 7net-l3i5, batched.

A batch is the cells' graphs collated into one torch_geometric batch and one forward
pass (the model differentiates energy by positions and strain itself), as sevenn's own
torch-sim interface does; neighbour lists come from pymatgen's cython search, as for
CHGNet. The checkpoints are read with ``torch.load(weights_only=True)``: their only
non-tensor objects are numpy arrays, which are allow-listed by name.

Footing: raw GGA/GGA+U. Both are trained on MPtrj's *uncorrected* energies: with the
MP2020 corrections their formation energies meet MP-20's DFT values (MAE in
docs/results/mlip-footing.md), without them they are off by about 0.2 eV/atom.
Matbench Discovery (WBM, FIRE <= 500 steps): SevenNet-0 F1 0.724, precision 0.650;
7net-l3i5 F1 0.760, precision 0.708 (CHGNet 0.3.0: 0.613 / 0.514).
"""

from __future__ import annotations

import numpy as np

from onnes.mlip.base import MLIP

# torch and sevenn are imported where used: the stability stages look up this class's
# footing in environments without either.


def _safe_checkpoint_class():
    """sevenn's checkpoint reader with the file read by ``torch.load(weights_only=True)``."""
    import torch
    from numpy._core.multiarray import _reconstruct
    from sevenn.checkpoint import SevenNetCheckpoint, _config_cp_routine

    allowed = [(_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
               *(type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_))]

    class SafeCheckpoint(SevenNetCheckpoint):
        def _load(self) -> None:  # sevenn 0.13's _load, without weights_only=False
            with torch.serialization.safe_globals(allowed):
                cp = torch.load(self.checkpoint_path, weights_only=True, map_location="cpu")
            self._config_original = cp.get("config", {})
            self._model_state_dict = cp.get("model_state_dict", {})
            self._optimizer_state_dict = self._scheduler_state_dict = {}
            self._epoch, self._time, self._hash = cp.get("epoch"), cp.get("time", "Not found"), cp.get("hash", "")
            self._config = _config_cp_routine(self._config_original)
            self._loaded = True

    return SafeCheckpoint


class SevenNetMLIP(MLIP):
    footing = "raw"
    package = "sevenn"
    pretrained = ""  # sevenn's name of the shipped checkpoint

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        import sevenn._keys as keys
        from sevenn.util import pretrained_name_to_path

        checkpoint = _safe_checkpoint_class()(pretrained_name_to_path(self.pretrained))
        model = checkpoint.build_model()
        model.set_is_batch_data(True)
        model.to(device)
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.model = model
        self.keys = keys
        self.cutoff = float(checkpoint.config[keys.CUTOFF])
        self.elements = frozenset(int(z) for z in checkpoint.config[keys.TYPE_MAP])

    def prepare(self, numbers, frac, lattice):
        """The cell's graph: directed edges i -> j within the cutoff, with image shifts."""
        from pymatgen.optimization.neighbors import find_points_in_spheres

        lattice = np.ascontiguousarray(lattice, dtype=float)
        cart = np.ascontiguousarray(frac @ lattice, dtype=float)
        center, neighbor, image, distance = find_points_in_spheres(
            cart, cart, r=self.cutoff, pbc=np.ones(3, dtype=np.int64), lattice=lattice, tol=1e-8)
        keep = ~((center == neighbor) & (distance <= 1e-8))
        if np.linalg.det(lattice) == 0:
            raise ValueError("singular cell")
        return {"numbers": np.asarray(numbers, dtype=np.int64), "cart": cart, "lattice": lattice,
                "edges": np.stack([center[keep], neighbor[keep]]).astype(np.int64), "shifts": image[keep]}

    def evaluate(self, prepared):
        import torch
        from sevenn.atom_graph_data import AtomGraphData
        from torch_geometric.loader.dataloader import Collater

        k, device, dtype = self.keys, self.device, torch.float32
        graphs = []
        for cell in prepared:
            lattice = torch.tensor(cell["lattice"], dtype=dtype)
            pos = torch.tensor(cell["cart"], dtype=dtype)
            edges = torch.tensor(cell["edges"])
            shifts = torch.tensor(cell["shifts"], dtype=dtype)
            numbers = torch.tensor(cell["numbers"])
            graphs.append(AtomGraphData(**{
                k.NODE_FEATURE: numbers, k.ATOMIC_NUMBERS: numbers, k.POS: pos, k.EDGE_IDX: edges,
                k.EDGE_VEC: pos[edges[1]] - pos[edges[0]] + shifts @ lattice, k.CELL: lattice,
                k.CELL_SHIFT: shifts, k.CELL_VOLUME: torch.abs(torch.det(lattice)),
                k.NUM_ATOMS: torch.tensor(len(numbers)), k.INFO: {}}))
        batch = Collater([], follow_batch=None, exclude_keys=None)(graphs).to(device)
        output = self.model(batch)
        energy = output[k.PRED_TOTAL_ENERGY].detach().cpu().numpy().astype(float).reshape(-1)
        forces = output[k.PRED_FORCE].detach().cpu().numpy().astype(float)
        voigt = output[k.PRED_STRESS].detach().cpu().numpy().astype(float).reshape(-1, 6)
        # sevenn's stress is -(1/V) dE/d(strain) in the order xx, yy, zz, xy, yz, zx
        stress = -voigt[:, [0, 3, 5, 3, 1, 4, 5, 4, 2]].reshape(-1, 3, 3)
        sizes = np.cumsum([len(cell["numbers"]) for cell in prepared])[:-1]
        return energy, np.split(forces, sizes), stress


class SevenNet0(SevenNetMLIP):
    name = "sevennet-0"
    pretrained = "7net-0"
    weights = "SevenNet-0 (11Jul2024)"


class SevenNetL3i5(SevenNetMLIP):
    name = "sevennet-l3i5"
    pretrained = "7net-l3i5"
    weights = "7net-l3i5"
