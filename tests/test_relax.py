"""Batched CHGNet relaxation: the same trajectory as ASE's FIRE + FrechetCellFilter (what
chgnet's StructOptimizer runs), in-flight batching that does not change results, early
rejection with reasons, reasoned rejects, resumable parts."""

import numpy as np
import pandas as pd
import pytest
from conftest import rocksalt, silicon
from pymatgen.core import Lattice, Structure

from onnes import crystals
from onnes.screen import relax as relax_module
from onnes.screen.fire import BatchFire
from onnes.mlip import load_mlip
from onnes.screen.relax import EarlyRejection, RelaxSettings, relax_rows, relax_table


def perturbed_table():
    rng = np.random.default_rng(0)
    structures = [rocksalt(5.5), silicon()]
    for s in structures:
        for i in range(len(s)):
            s.translate_sites([i], rng.normal(0, 0.05, 3), frac_coords=False)
    return crystals.from_structures(structures, ["nacl", "si"], "test")


def test_batched_fire_follows_ase_fire_with_the_frechet_cell_filter():
    """Two cells of different sizes in one batch, EMT forces and stresses: 40 steps of
    the vectorised optimiser reproduce ASE's positions and cells step by step."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    rng = np.random.default_rng(1)
    cells = [bulk("Cu", "fcc", a=3.75, cubic=True), bulk("Al", "fcc", a=4.0).repeat((2, 1, 1))]
    for atoms in cells:
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + rng.normal(0, 0.03, (3, 3))), scale_atoms=True)
        atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
    references = [atoms.copy() for atoms in cells]
    optimisers = []
    for atoms in references:
        atoms.calc = EMT()
        optimisers.append(FIRE(FrechetCellFilter(atoms), logfile=None))
    fire = BatchFire()
    mirror = [atoms.copy() for atoms in cells]
    for atoms in mirror:
        fire.add(atoms.positions.copy(), atoms.cell[:].copy())
    for _ in range(40):
        lattice, positions = fire.cells_and_positions()
        forces, stresses = [], []
        for atoms, cell, pos in zip(mirror, lattice, positions):
            atoms.set_cell(cell)
            atoms.positions = pos
            atoms.calc = EMT()
            forces.append(atoms.get_forces())
            stresses.append(atoms.get_stress(voigt=False))
        for optimiser in optimisers:
            optimiser.step()
        fire.step(*fire.generalised_forces(np.concatenate(forces), np.stack(stresses)))
    lattice, positions = fire.cells_and_positions()
    for atoms, cell, pos in zip(references, lattice, positions):
        assert np.abs(atoms.cell[:] - cell).max() < 1e-8
        assert np.abs(atoms.positions - pos).max() < 1e-8
    assert np.abs(references[0].cell[:] - cells[0].cell[:]).max() > 1e-3  # the cells did move


@pytest.fixture(scope="module")
def mlip():
    pytest.importorskip("chgnet")
    return load_mlip("chgnet")


@pytest.fixture(scope="module")
def model(mlip):
    """The CHGNet network itself, for the checks against chgnet's own code."""
    return mlip.model


def test_graphs_from_arrays_equal_chgnets_own_graphs(model):
    """The numpy graph builder gives chgnet's graph converter's arrays exactly, in its
    order: small cells (an atom bonded to its own images), random cells, a sparse cell
    with no bond short enough for an angle."""
    from onnes.mlip.chgnet_batch import crystal_graph

    rng = np.random.default_rng(3)
    cells = [rocksalt(), silicon(), Structure(Lattice.cubic(2.9), ["Fe"], [[0, 0, 0]]),
             Structure(Lattice.cubic(4.2), ["Xe"], [[0, 0, 0]])]  # no neighbour within 3 A: no angle
    for n in (3, 7, 12):
        lattice = Lattice.from_parameters(*rng.uniform(3.5, 7, 3), *rng.uniform(70, 110, 3))
        cells.append(Structure(lattice, rng.choice(["Li", "O", "Cu", "La"], n), rng.random((n, 3))))
    for structure in cells:
        reference = model.graph_converter(structure)
        ours = crystal_graph(model, np.array(structure.atomic_numbers), structure.frac_coords,
                             structure.lattice.matrix)
        for name in ("atom_graph", "directed2undirected", "undirected2directed", "bond_graph", "neighbor_image"):
            expected, got = getattr(reference, name), getattr(ours, name)
            assert got.shape == expected.shape, (structure.formula, name)
            assert torch_equal(got, expected), (structure.formula, name)
    assert len(model.graph_converter(cells[3]).bond_graph) == 0


def test_batched_energies_forces_stresses_match_chgnets_predictions(model):
    """One backward pass over a batch featurised at once gives what chgnet's own
    ``predict_graph`` (two second-order backward passes, cell-by-cell features) gives."""
    from onnes.mlip.chgnet_batch import crystal_graph, energies_forces_stresses

    rng = np.random.default_rng(5)
    structures = [crystals.to_structure(row) for _, row in perturbed_table().iterrows()]
    for n in (4, 9):
        lattice = Lattice.from_parameters(*rng.uniform(4, 6, 3), *rng.uniform(80, 100, 3))
        structures.append(Structure(lattice, rng.choice(["Mg", "B", "O"], n), rng.random((n, 3))))
    graphs = [crystal_graph(model, np.array(s.atomic_numbers), s.frac_coords, s.lattice.matrix) for s in structures]
    energy, forces, stresses = energies_forces_stresses(model, graphs)
    reference = model.predict_graph(graphs, task="efs", batch_size=len(graphs))
    for k, (structure, expected) in enumerate(zip(structures, reference)):
        assert energy[k] / len(structure) == pytest.approx(expected["e"], abs=1e-5)
        scale = max(1.0, np.abs(expected["f"]).max())
        np.testing.assert_allclose(forces[k], expected["f"], atol=1e-4 * scale)
        np.testing.assert_allclose(stresses[k] * 160.21766208, expected["s"], atol=1e-3)  # eV/A^3 -> GPa
    assert np.abs(forces[-1]).max() > 1.0  # the random cells are far from equilibrium


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a.to(b.dtype), b))


def test_batched_relaxation_matches_struct_optimizer(mlip, model):
    from chgnet.model import StructOptimizer

    table = perturbed_table()
    settings = RelaxSettings.defaults(max_steps=200)
    result = relax_rows(mlip, table, settings).set_index("id")
    optimizer = StructOptimizer(model=model, use_device="cpu")
    for _, row in table.iterrows():
        reference = optimizer.relax(crystals.to_structure(row), fmax=settings.fmax, steps=settings.max_steps,
                                    verbose=False)
        energy = reference["trajectory"].energies[-1] / len(row["species"])
        assert result.loc[row["id"], "relax_converged"]
        # chgnet records the start, every step, and the end once more
        assert result.loc[row["id"], "relax_steps"] == len(reference["trajectory"].energies) - 2
        assert result.loc[row["id"], "energy_per_atom"] == pytest.approx(energy, abs=1e-4)
        assert result.loc[row["id"], "fmax"] < settings.fmax
    relaxed = crystals.to_structure(result.reset_index().iloc[0])
    assert relaxed.composition.reduced_formula == "NaCl"


def test_in_flight_batching_does_not_change_results(mlip):
    """A budget of one cell per call (structures queue and take freed places) gives the
    same relaxations as one batch of all."""
    table = pd.concat([perturbed_table()] * 3, ignore_index=True)
    table["id"] = [f"{i}-{k}" for k, i in enumerate(table.id)]
    together = relax_rows(mlip, table, RelaxSettings.defaults(max_steps=60, batch_atoms=1000))
    queued = relax_rows(mlip, table, RelaxSettings.defaults(max_steps=60, batch_atoms=8))
    assert queued.id.tolist() == table.id.tolist()
    assert (together.relax_steps == queued.relax_steps).all()
    np.testing.assert_allclose(together.energy_per_atom, queued.energy_per_atom, atol=1e-4)


def test_structures_far_above_the_hull_are_rejected_early_with_the_figure(mlip):
    table = perturbed_table()
    settings = RelaxSettings.defaults(max_steps=200, reject_after=3, reject_above_hull=0.5)
    # a hull 10 eV/atom below anything CHGNet predicts for silicon; none known for NaCl
    result = relax_rows(mlip, table, settings, reference_energy=lambda s: -15.0 if s[0] == 14 else None
                        ).set_index("id")
    assert result.relax_status["si"] == "rejected_early" and result.relax_steps["si"] == 3
    assert "above the hull after 3 steps" in result.relax_error["si"]
    assert np.isfinite(result.energy["si"]) and len(result.lattice["si"]) == 9
    assert result.relax_status["nacl"] == "converged"


def test_exploding_cells_are_rejected_and_nothing_before_reject_after():
    settings = RelaxSettings.defaults(reject_after=10, reject_above_hull=1.0, reject_volume_ratio=4.0)
    rejection = EarlyRejection(settings, None)
    reasons = rejection.reasons(steps=[9, 10, 10, 10], energy_per_atom=[5.0, -3.0, -3.0, 1.0],
                                hull_reference=[-4.0, -4.0, -4.0, np.nan], volume_ratio=[9.0, 1.0, 0.2, 5.0])
    assert reasons[0] is None  # too early for either rule
    assert reasons[1] is None  # 1.0 eV/atom above: not beyond the margin
    assert "volume x0.20" in reasons[2] and "volume x5.00" in reasons[3]


def test_the_energy_margin_tightens_later_in_the_relaxation():
    settings = RelaxSettings.defaults(reject_after=10, reject_above_hull=3.0,
                                      reject_later=[{"after": 40, "margin": 0.5}, {"after": 20, "margin": 1.0}])
    rejection = EarlyRejection(settings, None)
    assert [rejection.margin(t) for t in (9, 10, 19, 20, 39, 40, 500)] == [None, 3.0, 3.0, 1.0, 1.0, 0.5, 0.5]
    reasons = rejection.reasons(steps=[19, 20, 39, 40], energy_per_atom=[-3.2] * 4, hull_reference=[-4.0] * 4,
                                volume_ratio=[1.0] * 4)
    assert reasons[:3] == [None, None, None]  # 0.8 eV/atom above: inside 3.0 and 1.0
    assert "0.800 eV/atom above the hull after 40 steps (margin 0.5)" in reasons[3]
    never = EarlyRejection(RelaxSettings.defaults(reject_above_hull=None), None)
    assert never.margin(1000) is None  # no energy rule at all: the later margins do not apply either


def test_bad_structures_are_rejected_with_reasons(mlip):
    table = perturbed_table()
    bad = pd.concat([table.iloc[[0]]] * 6, ignore_index=True)
    bad["id"] = ["nan", "unknown-z", "huge", "americium", "zero-z", "empty"]
    bad.at[4, "species"] = [8] + [0] * (len(bad.species[4]) - 1)  # the largest Z is a real one
    bad.at[5, "species"], bad.at[5, "frac_coords"] = [], []
    bad.at[3, "species"] = [95] * len(bad.species[3])  # a real element outside CHGNet's training data
    bad.at[0, "frac_coords"] = [float("nan")] * len(bad.frac_coords[0])
    bad.at[1, "species"] = [150] * len(bad.species[1])
    big = crystals.from_structures([rocksalt().make_supercell([4, 4, 4])], ["huge"], "t").iloc[0]
    for column in ("species", "frac_coords", "lattice"):
        bad.at[2, column] = big[column]
    result = relax_rows(mlip, bad, RelaxSettings.defaults(max_atoms=200)).set_index("id")
    assert (result.relax_status == "rejected").all()
    assert "non_finite_lattice" in result.relax_error["nan"]
    assert "atomic number 150" in result.relax_error["unknown-z"]
    assert "atomic number 0" in result.relax_error["zero-z"]  # the bad Z, not the largest
    assert "no_atoms" in result.relax_error["empty"]
    assert "512 atoms" in result.relax_error["huge"]
    assert "Z=95" in result.relax_error["americium"]


def test_isolated_atoms_fail_with_a_reason_and_the_batch_goes_on(mlip):
    table = perturbed_table()
    lonely = crystals.from_structures([rocksalt(14.0)], ["lonely"], "t")  # 7 A apart: beyond CHGNet's 5 A
    result = relax_rows(mlip, pd.concat([lonely, table], ignore_index=True), RelaxSettings.defaults(max_steps=50)
                        ).set_index("id")
    assert result.relax_status["lonely"] == "failed" and "isolated" in result.relax_error["lonely"]
    assert result.relax_status[["nacl", "si"]].tolist() == ["converged", "converged"]


def test_killed_job_resumes_without_redoing_finished_structures(mlip, tmp_path, monkeypatch):
    table = perturbed_table()
    settings = RelaxSettings.defaults(max_steps=3, chunk_size=1)
    first = relax_table(mlip, table, tmp_path, settings)
    assert sorted(p.name for p in (tmp_path / "parts").glob("*.parquet")) == ["00000.parquet", "00001.parquet"]
    (tmp_path / "parts/00001.parquet").unlink()  # as if killed before the second result was written
    calls = []
    real = relax_module.relax_rows

    def counting(model_, rows, *args, **kwargs):
        calls.append(list(rows.id))
        return real(model_, rows, *args, **kwargs)

    monkeypatch.setattr(relax_module, "relax_rows", counting)
    second = relax_table(mlip, table, tmp_path, settings)
    assert len(calls) == 1 and len(calls[0]) == 1
    pd.testing.assert_frame_equal(first[["id", "relax_status"]], second[["id", "relax_status"]])
    assert second.id.tolist() == table.id.tolist()


def test_changed_settings_discard_finished_parts(mlip, tmp_path):
    table = perturbed_table()
    relax_table(mlip, table, tmp_path, RelaxSettings.defaults(max_steps=2, chunk_size=1))
    stale = tmp_path / "parts/00000.parquet"
    stale_time = stale.stat().st_mtime_ns
    result = relax_table(mlip, table, tmp_path, RelaxSettings.defaults(max_steps=4, chunk_size=1))
    assert stale.stat().st_mtime_ns != stale_time  # recomputed, not reused
    assert result.relax_steps.max() > 2


def test_shards_split_rows_without_overlap():
    table = pd.DataFrame({"id": [str(i) for i in range(10)]})
    shards = [relax_module.shard_rows(table, i, 3).id.tolist() for i in range(3)]
    assert sum(shards, []) == table.id.tolist()
    assert [len(s) for s in shards] == [3, 3, 4]
