"""CHGNet energies, forces and stresses for a batch of cells given as arrays.

The same network call as ``CHGNet.predict_graph(..., task="efs")`` with three savings
that matter inside a relaxation loop (measured with cProfile on 64 generated cells,
2 CPU threads: the two backward passes took 54 % of a step):

- one backward pass for forces and stresses together, without ``create_graph``
  (chgnet differentiates twice, each time building a graph for training-time
  second derivatives);
- crystal graphs built straight from numpy arrays: pymatgen's cython neighbour search,
  then the atom and line graphs in vectorised numpy (:func:`graph_arrays`; 21 ms
  instead of 81 ms for 64 generated cells with chgnet's graph objects), without a
  pymatgen ``Structure`` per cell and step;
- the batch featurised at once (:func:`batched_graph`: strains, bond and angle bases
  over all cells in single tensor operations) instead of chgnet's cell-by-cell loop.

Forces are -dE/dr and stresses (1/V) dE/d(strain), as chgnet defines them (Deng et al.,
Nat. Mach. Intell. 5, 1031, 2023).
"""

from __future__ import annotations

import numpy as np
import torch


def _pair_codes(first: np.ndarray, second: np.ndarray, image: np.ndarray, n_atoms: int) -> np.ndarray:
    """One integer per (center, neighbour, image) triple (images are small: |n| < 512)."""
    shifted = image.astype(np.int64) + 512
    return ((first.astype(np.int64) * n_atoms + second) * 1024 + shifted[:, 0]) * 1048576 \
        + shifted[:, 1] * 1024 + shifted[:, 2]


def graph_arrays(n_atoms: int, center: np.ndarray, neighbor: np.ndarray, image: np.ndarray,
                 distance: np.ndarray, bond_cutoff: float) -> dict[str, np.ndarray]:
    """chgnet's atom graph and line (bond) graph from a directed neighbour list, in numpy.

    The same arrays, in the same order, as chgnet's ``Graph`` (``create_graph``, then
    ``adjacency_list`` and ``line_graph_adjacency_list``), whose pure-Python edge objects
    took a fifth of a relaxation step:

    - directed edges keep the neighbour list's order; an undirected edge joins i->j (image
      n) with j->i (image -n) and is numbered by the first of its two directed edges;
    - an angle joins, at one atom, a bond no longer than ``bond_cutoff`` to every other
      directed edge from that atom shorter than it: rows (atom, bond, its directed edge,
      other bond, other directed edge), ordered as chgnet walks them (bond by bond, each
      bond's two ends in turn, the other edges grouped by neighbour atom in order of first
      appearance).

    Raises ValueError when a directed edge has no reverse (chgnet's "directed edges are
    not complete").
    """
    count = len(center)
    codes = _pair_codes(center, neighbor, image, n_atoms)
    order = np.argsort(codes, kind="stable")
    reverse_codes = _pair_codes(neighbor, center, -image, n_atoms)
    slot = np.minimum(np.searchsorted(codes[order], reverse_codes), max(count - 1, 0))
    reverse = order[slot] if count else slot
    if count and not np.array_equal(codes[reverse], reverse_codes):
        raise ValueError("neighbour list is not symmetric: a directed edge has no reverse")
    first = np.minimum(np.arange(count), reverse)  # the directed edge that opened the bond
    undirected2directed = np.flatnonzero(first == np.arange(count))
    directed2undirected = np.searchsorted(undirected2directed, first)

    # angles: (edge d of a short bond, other short edge e) sharing their center atom
    bond_ok = distance[first] <= bond_cutoff
    short = distance < bond_cutoff
    side = (np.arange(count) != first).astype(np.int64)  # 0: the bond's first edge, 1: its reverse
    d_edges = np.flatnonzero(bond_ok)
    d_edges = d_edges[np.lexsort((side[d_edges], directed2undirected[d_edges]))]
    # other edges of each atom, in chgnet's neighbour-dict order
    _, first_seen = np.unique(center * n_atoms + neighbor, return_inverse=True)
    group_start = np.full(first_seen.max() + 1 if count else 0, count, dtype=np.int64)
    np.minimum.at(group_start, first_seen, np.arange(count))
    e_edges = np.flatnonzero(short)
    e_edges = e_edges[np.lexsort((e_edges, group_start[first_seen[e_edges]], center[e_edges]))]
    per_atom = np.bincount(center[e_edges], minlength=n_atoms)
    atom_start = np.concatenate([[0], np.cumsum(per_atom)[:-1]])
    repeats = per_atom[center[d_edges]]
    d_rows = np.repeat(d_edges, repeats)
    offsets = np.arange(repeats.sum()) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    e_rows = e_edges[atom_start[center[d_rows]] + offsets]
    keep = e_rows != d_rows
    d_rows, e_rows = d_rows[keep], e_rows[keep]
    bond_graph = np.stack([center[d_rows], directed2undirected[d_rows], d_rows, directed2undirected[e_rows], e_rows],
                          axis=1) if len(d_rows) else np.zeros(0, dtype=np.int64)  # chgnet's empty shape
    return {"atom_graph": np.stack([center, neighbor], axis=1), "directed2undirected": directed2undirected,
            "undirected2directed": undirected2directed, "bond_graph": bond_graph}


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
    arrays = graph_arrays(n_atoms, center, neighbor, image, distance, converter.bond_graph_cutoff)

    def index(name):
        return torch.as_tensor(arrays[name], dtype=torch.int32)

    return CrystalGraph(
        atomic_number=torch.tensor(np.asarray(numbers), dtype=torch.int32),
        atom_frac_coord=torch.tensor(frac, dtype=dtype),
        atom_graph=index("atom_graph"),
        neighbor_image=torch.as_tensor(image, dtype=dtype),
        directed2undirected=index("directed2undirected"),
        undirected2directed=index("undirected2directed"),
        bond_graph=index("bond_graph"),
        lattice=torch.tensor(lattice, dtype=dtype),
        atom_graph_cutoff=converter.atom_graph_cutoff,
        bond_graph_cutoff=converter.bond_graph_cutoff,
    )


def batched_graph(model, graphs: list):
    """chgnet's ``BatchedGraph`` for ``graphs`` with every cell featurised at once.

    ``BatchedGraph.from_graphs`` loops over the cells (lattice strain, cartesian
    coordinates, bond and angle bases cell by cell: a few dozen small tensor operations
    each, forward and backward); here each is one operation over the whole batch. The
    bases are chgnet's own modules, so the features are the same up to float rounding.
    ``atom_positions`` and ``strains`` hold one tensor each, (atoms, 3) and (cells, 3, 3),
    to differentiate against.
    """
    from chgnet.model.model import BatchedGraph

    def cat(name):
        return torch.cat([getattr(graph, name) for graph in graphs])

    device = graphs[0].lattice.device

    def segments(counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The cell each item belongs to, and where each cell's items start."""
        sizes = torch.tensor(counts, device=device)
        owner = torch.repeat_interleave(torch.arange(len(graphs), device=device), sizes)
        return owner, torch.cumsum(sizes, 0) - sizes

    atom_owner, atom_shift = segments([len(graph.atomic_number) for graph in graphs])
    edge_owner, directed_shift = segments([len(graph.atom_graph) for graph in graphs])
    undirected_owner, undirected_shift = segments([len(graph.undirected2directed) for graph in graphs])
    n_angles = [len(graph.bond_graph) for graph in graphs]

    strain = torch.zeros(len(graphs), 3, 3, dtype=torch.float32, device=device, requires_grad=True)
    lattice = torch.stack([graph.lattice for graph in graphs]) @ (torch.eye(3, device=device) + strain)
    volumes = torch.sum(lattice[:, 0] * torch.linalg.cross(lattice[:, 1], lattice[:, 2]), dim=1)
    cart = torch.einsum("ni,nij->nj", cat("atom_frac_coord"), lattice[atom_owner])

    atom_graph = cat("atom_graph").long() + atom_shift[edge_owner, None]
    shift = torch.einsum("ei,eij->ej", cat("neighbor_image"), lattice[edge_owner])
    # chgnet's BondEncoder: vectors centre - (neighbour + image), bases on undirected bonds
    vectors = cart[atom_graph[:, 0]] - (cart[atom_graph[:, 1]] + shift)
    lengths = torch.norm(vectors, dim=1)
    vectors = vectors / lengths[:, None]
    undirected_lengths = lengths[cat("undirected2directed").long() + directed_shift[undirected_owner]]
    encoder = model.bond_basis_expansion
    bond_bases_ag = encoder.rbf_expansion_ag(undirected_lengths)
    bond_bases_bg = encoder.rbf_expansion_bg(undirected_lengths)

    if any(n_angles):
        angle_owner, _ = segments(n_angles)
        bond_graph = torch.cat([graph.bond_graph.reshape(-1, 5) for graph in graphs]).long()
        angle_bases = model.angle_basis_expansion(vectors[bond_graph[:, 2] + directed_shift[angle_owner]],
                                                  vectors[bond_graph[:, 4] + directed_shift[angle_owner]])
        batched_bond_graph = torch.stack([bond_graph[:, 0] + atom_shift[angle_owner],
                                          bond_graph[:, 1] + undirected_shift[angle_owner],
                                          bond_graph[:, 3] + undirected_shift[angle_owner]], dim=1).int()
    else:
        angle_bases, batched_bond_graph = torch.tensor([]), torch.tensor([])
    return BatchedGraph(
        atomic_numbers=cat("atomic_number"), bond_bases_ag=bond_bases_ag, bond_bases_bg=bond_bases_bg,
        angle_bases=angle_bases, batched_atom_graph=atom_graph.int(), batched_bond_graph=batched_bond_graph,
        atom_owners=atom_owner.int(), directed2undirected=(cat("directed2undirected").long()
                                                           + undirected_shift[edge_owner]).int(),
        atom_positions=[cart], strains=[strain], volumes=volumes.detach())


def energies_forces_stresses(model, graphs: list) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(total energies in eV (B,), forces in eV/A per cell, stresses in eV/A^3 (B, 3, 3))."""
    device = next(model.parameters()).device
    graphs = [graph.to(device) for graph in graphs]
    batch = batched_graph(model, graphs)
    prediction = model._compute(batch)  # energy only: the derivatives follow in one pass
    atoms_per_graph = prediction["atoms_per_graph"]
    energy = prediction["e"]
    if model.composition_model is not None:
        energy = energy + model.composition_model(graphs)
    total = energy * atoms_per_graph if model.is_intensive else energy
    position_gradient, strain_gradient = torch.autograd.grad(total.sum(), [*batch.atom_positions, *batch.strains])
    forces = [-part.cpu().numpy().astype(float) for part in torch.split(position_gradient, atoms_per_graph.tolist())]
    stresses = strain_gradient / batch.volumes.view(-1, 1, 1)
    return (total.detach().cpu().numpy().astype(float), forces, stresses.cpu().numpy().astype(float))
