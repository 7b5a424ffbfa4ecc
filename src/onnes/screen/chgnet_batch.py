"""CHGNet energies, forces and stresses for a batch of cells given as arrays.

The same network call as ``CHGNet.predict_graph(..., task="efs")`` with two savings
that matter inside a relaxation loop (measured with cProfile on 64 generated cells,
2 CPU threads: the two backward passes took 54 % of a step):

- one backward pass for forces and stresses together, without ``create_graph``
  (chgnet differentiates twice, each time building a graph for training-time
  second derivatives);
- crystal graphs built straight from numpy arrays (pymatgen's cython neighbour search
  and chgnet's cython graph builder), without a pymatgen ``Structure`` per cell and step.

Forces are -dE/dr and stresses (1/V) dE/d(strain), as chgnet defines them (Deng et al.,
Nat. Mach. Intell. 5, 1031, 2023).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch



def crystal_graph(model, numbers: np.ndarray, frac: np.ndarray, lattice: np.ndarray):
    """chgnet's ``CrystalGraph`` for one cell (what ``model.graph_converter`` makes from a
    pymatgen Structure with the same coordinates). Raises ValueError on isolated atoms."""
    from chgnet.graph.crystalgraph import CrystalGraph
    from pymatgen.optimization.neighbors import find_points_in_spheres

    converter = model.graph_converter
    dtype = torch.float32
    cart = np.ascontiguousarray(frac @ lattice, dtype=float)
    center, neighbor, image, distance = find_points_in_spheres(
        cart, cart, r=converter.atom_graph_cutoff, pbc=np.ones(3, dtype=np.int64),
        lattice=np.ascontiguousarray(lattice, dtype=float), tol=1e-8)
    keep = ~((center == neighbor) & (distance <= 1e-8))  # the atom itself
    center, neighbor, image, distance = center[keep], neighbor[keep], image[keep], distance[keep]
    n_atoms = len(numbers)
    isolated = n_atoms - len(np.unique(center))
    if isolated:
        raise ValueError(f"{isolated} isolated atom(s) beyond CHGNet's {converter.atom_graph_cutoff} A cutoff")
    graph = converter.create_graph(n_atoms, center, neighbor, image, distance)
    atom_graph, directed2undirected = graph.adjacency_list()
    bond_graph, undirected2directed = graph.line_graph_adjacency_list(cutoff=converter.bond_graph_cutoff)
    return CrystalGraph(
        atomic_number=torch.tensor(np.asarray(numbers), dtype=torch.int32),
        atom_frac_coord=torch.as_tensor(frac, dtype=dtype),
        atom_graph=torch.as_tensor(np.asarray(atom_graph), dtype=torch.int32),
        neighbor_image=torch.as_tensor(image, dtype=dtype),
        directed2undirected=torch.as_tensor(np.asarray(directed2undirected), dtype=torch.int32),
        undirected2directed=torch.as_tensor(np.asarray(undirected2directed), dtype=torch.int32),
        bond_graph=torch.as_tensor(np.asarray(bond_graph), dtype=torch.int32),
        lattice=torch.as_tensor(lattice, dtype=dtype),
        atom_graph_cutoff=converter.atom_graph_cutoff,
        bond_graph_cutoff=converter.bond_graph_cutoff,
    )


def energies_forces_stresses(model, graphs: list) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(total energies in eV (B,), forces in eV/A per cell, stresses in eV/A^3 (B, 3, 3))."""
    from chgnet.model.model import BatchedGraph

    device = next(model.parameters()).device
    graphs = [graph.to(device) for graph in graphs]
    with warnings.catch_warnings():  # chgnet converts volumes that require grad; harmless here
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
        batch = BatchedGraph.from_graphs(graphs, bond_basis_expansion=model.bond_basis_expansion,
                                         angle_basis_expansion=model.angle_basis_expansion, compute_stress=True)
    prediction = model._compute(batch)  # energy only: the derivatives follow in one pass
    atoms_per_graph = prediction["atoms_per_graph"]
    energy = prediction["e"]
    if model.composition_model is not None:
        energy = energy + model.composition_model(graphs)
    total = energy * atoms_per_graph if model.is_intensive else energy
    gradients = torch.autograd.grad(total.sum(), [*batch.atom_positions, *batch.strains])
    n = len(graphs)
    forces = [-g.detach().cpu().numpy().astype(float) for g in gradients[:n]]
    strain_gradients = torch.stack(gradients[n:]).detach()
    stresses = strain_gradients / batch.volumes.view(-1, 1, 1)
    return (total.detach().cpu().numpy().astype(float), forces, stresses.cpu().numpy().astype(float))
