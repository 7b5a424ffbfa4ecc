"""The MLIP interface: a toy potential defined here plugs in through the registry and
relaxes through the same code as CHGNet; SevenNet's batched path equals its own ASE
calculator; raw-footing energies meet the hull corrected; a diverging potential is
caught; an unknown name is a clear error."""

import numpy as np
import pandas as pd
import pytest
from conftest import rocksalt

from onnes import crystals
from onnes.config import ConfigError, validate
from onnes.mlip import AseCalculatorMLIP, UnknownMLIP, load_mlip, mlip_names, register_mlip
from onnes.screen.relax import RelaxSettings, relax_rows, relax_stage


class ToyEMT(AseCalculatorMLIP):
    """ASE's effective-medium potential (Al, Cu, Ag, Au, Ni, Pd, Pt, H, C, N, O) as an MLIP."""

    footing = "mp2020"
    package = "ase"
    weights = "EMT"

    def __init__(self, device="cpu"):
        super().__init__(device)
        from ase.calculators.emt import EMT

        self._calculator = EMT()
        self.elements = frozenset({1, 6, 7, 8, 13, 28, 29, 46, 47, 78, 79})

    def calculator(self):
        return self._calculator


class Collapsing(ToyEMT):
    """EMT whose energy runs away to -1e6 eV after the first call: a potential outside its domain."""

    def __init__(self, device="cpu"):
        super().__init__(device)
        self.calls = 0

    def evaluate(self, prepared):
        energy, forces, stresses = super().evaluate(prepared)
        self.calls += 1
        return energy - (1e6 if self.calls > 1 else 0.0), forces, stresses


register_mlip("toy-emt", ToyEMT)
register_mlip("toy-collapsing", Collapsing)


def copper_table():
    from ase.build import bulk

    rng = np.random.default_rng(0)
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    table = pd.DataFrame([{"id": "cu", "species": atoms.numbers.tolist(),
                           "frac_coords": atoms.get_scaled_positions().reshape(-1).tolist(),
                           "lattice": atoms.cell[:].reshape(-1).tolist(), "source": "t"}])
    return pd.concat([table, crystals.from_structures([rocksalt()], ["nacl"], "t")], ignore_index=True)


def test_a_toy_potential_plugs_in_through_the_registry(tmp_path):
    """Registered in this file alone: the config accepts its name, relax_stage relaxes with
    it by name, it converges Cu (EMT's lattice constant 3.59 A), and an element it does
    not know is rejected with its name."""
    assert "toy-emt" in mlip_names()
    config = validate({"relax": {"calculator": "toy-emt", "select": "valid", "max_steps": 300, "threads": 1}})
    crystals.write_table(copper_table(), tmp_path / "table.parquet")
    result = relax_stage(tmp_path / "table.parquet", tmp_path / "relaxed.parquet", config["relax"]).set_index("id")
    assert result.relax_status["cu"] == "converged" and result.mlip["cu"] == "toy-emt"
    volume = abs(np.linalg.det(np.reshape(result.lattice["cu"], (3, 3))))
    assert volume ** (1 / 3) == pytest.approx(3.59, abs=0.02)
    assert result.relax_status["nacl"] == "rejected" and "unknown to toy-emt" in result.relax_error["nacl"]


def test_a_diverging_potential_stops_as_diverged_never_converged():
    settings = RelaxSettings.defaults(max_steps=50, reject_above_hull=None)
    result = relax_rows(load_mlip("toy-collapsing"), copper_table().head(1), settings)
    assert result.relax_status[0] == "diverged" and "below" in result.relax_error[0]
    assert not result.relax_converged[0]


def test_unknown_mlip_names_are_clear_errors():
    with pytest.raises(UnknownMLIP, match="unknown MLIP 'mace-mp'.*chgnet"):
        load_mlip("mace-mp")
    with pytest.raises(ConfigError, match="confirm.calculator.*unknown MLIP 'orb'"):
        validate({"confirm": {"calculator": "orb"}})


@pytest.mark.parametrize("name, pretrained", [("sevennet-0", "7net-0"), ("sevennet-l3i5", "7net-l3i5")])
def test_sevennet_batches_equal_its_ase_calculator(name, pretrained):
    """Three cells of different sizes in one batched call against sevenn's own calculator,
    one cell at a time: energies, forces and stresses (ASE's sign and order)."""
    pytest.importorskip("sevenn")
    from ase.build import bulk
    from ase.stress import voigt_6_to_full_3x3_stress
    from sevenn.calculator import SevenNetCalculator

    rng = np.random.default_rng(0)
    cells = [bulk("NaCl", "rocksalt", a=5.6, cubic=True), bulk("Si", "diamond", a=5.43).repeat((2, 1, 1)),
             bulk("Fe", "bcc", a=2.87)]
    for atoms in cells:
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))), scale_atoms=True)
    mlip = load_mlip(name)
    assert mlip.footing == "raw" and {11, 17, 14, 26} <= mlip.elements
    energy, forces, stresses = mlip.evaluate([mlip.prepare(a.numbers, a.get_scaled_positions(), a.cell[:])
                                              for a in cells])
    calculator = SevenNetCalculator(pretrained)
    for atoms, e, f, s in zip(cells, energy, forces, stresses):
        atoms.calc = calculator
        assert e == pytest.approx(atoms.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(f, atoms.get_forces(), atol=1e-4)
        np.testing.assert_allclose(s, voigt_6_to_full_3x3_stress(atoms.get_stress()), atol=1e-5)


def test_raw_footing_energies_get_the_mp2020_corrections_before_the_hull():
    """Fe2O3 (GGA+U with MP's U for Fe, plus the oxide anion correction): the same total
    energy read as raw lies higher on the hull by the correction per atom."""
    import json

    from pymatgen.core import Composition, Lattice, Structure

    from onnes.screen.hull import ConvexHull, evaluate_stability, mp2020_correction_per_atom

    structure = Structure.from_spacegroup("R-3c", Lattice.hexagonal(5.04, 13.75), ["Fe", "O"],
                                          [[0, 0, 0.355], [0.306, 0, 0.25]])
    table = crystals.from_structures([structure], ["fe2o3"], "t")
    table["energy"] = [-7.0 * len(structure)]
    references = pd.DataFrame({"id": ["r"], "source": "t", "composition": [json.dumps({"Fe": 2, "O": 3})],
                               "e_form_per_atom": [-1.7]})
    hull = ConvexHull(references, {"Fe": -8.4, "O": -4.9})
    corrected = evaluate_stability(table, hull, footing="raw").e_above_hull[0]
    as_is = evaluate_stability(table, hull, footing="mp2020").e_above_hull[0]
    correction = mp2020_correction_per_atom(Composition("Fe2O3"))
    assert correction < -0.5  # U on Fe and the oxide correction, per atom
    assert corrected - as_is == pytest.approx(correction, abs=1e-6)
