"""Structural validity: distances (periodic images included) and volume."""

import numpy as np
from conftest import perovskite, rocksalt
from pymatgen.core import Lattice, Structure

from onnes import crystals
from onnes.screen.validity import min_distance, structural_validity


def test_min_distance_matches_pymatgen():
    for structure in (rocksalt(), perovskite(), Structure(Lattice.from_parameters(3, 4, 5, 70, 80, 100),
                                                          ["Na", "Cl"], [[0, 0, 0], [0.9, 0.95, 0.1]])):
        dm = structure.distance_matrix.copy()
        np.fill_diagonal(dm, np.inf)
        expected = min(dm.min(), min(structure.lattice.get_lll_reduced_lattice().abc))
        assert abs(min_distance(structure.frac_coords, structure.lattice.matrix) - expected) < 1e-8


def test_structural_validity_flags_each_fault():
    good = rocksalt()
    close = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    flat = Structure(Lattice([[4, 0, 0], [0, 4, 0], [0, 0, 0.001]]), ["Na"], [[0, 0, 0]])
    table = crystals.from_structures([good, close, flat], ["good", "close", "flat"], "t")
    nan_row = table.iloc[0].copy()
    nan_row["lattice"] = [float("nan")] * 9
    table.loc[3] = nan_row
    result = structural_validity(table)
    assert result.valid_struct.tolist() == [True, False, False, False]
    assert result.min_distance[1] < 0.5
