"""Screening funnel: SMACT validity, uniqueness and novelty, counted drops for bad input."""

import numpy as np
import pytest
from conftest import perovskite, rocksalt, silicon
from pymatgen.core import Lattice, Structure

from onnes import crystals
from onnes.config import validate
from onnes.matching import Tolerances, find_known, reduced_formulas
from onnes.screen.composition import smact_valid
from onnes.screen.funnel import screen

SETTINGS = validate({})["screen"]


@pytest.mark.parametrize(
    "counts, valid",
    [
        ({"Na": 4, "Cl": 4}, True),
        ({"Na": 1, "Cl": 2}, False),
        ({"Fe": 2, "O": 3}, True),
        ({"Sr": 1, "Ti": 1, "O": 3}, True),
        ({"Cu": 3, "Au": 1}, True),  # all metals: an alloy
        ({"Si": 8}, True),  # one element
        ({"Na": 1, "O": 3}, False),
        ({"Cl": 1, "Na": 1, "Ne": 1}, False),  # Ne has no oxidation state
        ({"O": 1, "F": 2}, True),  # OF2: smact14 lists O(+2) (the ICSD-based sets do not)
        ({"F": 1, "Cl": 1}, True),  # ClF: Cl(+1) less electronegative than F
    ],
)
def test_smact_validity(counts, valid):
    assert smact_valid(counts) is valid


def table_of(structures, ids):
    return crystals.from_structures(structures, ids, "gen")


def test_novelty_compares_only_within_a_formula():
    reference = table_of([rocksalt(5.64), silicon()], ["ref-nacl", "ref-si"])
    generated = table_of([rocksalt(5.70), perovskite()], ["g-nacl", "g-sto"])
    assert find_known(generated, reference, Tolerances()) == {"g-nacl"}
    assert reduced_formulas(generated).tolist() == ["NaCl", "SrTiO3"]


def test_funnel_counts_and_reasons():
    reference = table_of([rocksalt(5.64)], ["ref-nacl"])
    too_close = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    na_cl2 = Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])
    generated = table_of(
        [rocksalt(5.66), perovskite(), perovskite(), too_close, na_cl2],
        ["known", "novel", "novel-dup", "overlap", "bad-comp"],
    )
    table, funnel = screen(generated, reference, SETTINGS)
    assert funnel["steps"] == {"generated": 5, "valid": 3, "unique": 2, "novel": 1}
    assert funnel["rates"]["novel"] == pytest.approx(0.2)
    reasons = dict(zip(table.id, table.drop_reason))
    assert reasons == {"known": "known", "novel": None, "novel-dup": "duplicate", "overlap": "invalid_structure",
                       "bad-comp": "invalid_composition"}
    assert table.set_index("id").duplicate_of["novel-dup"] == "novel"


def test_bad_generated_structures_are_dropped_not_crashing():
    good = rocksalt()
    names = ["nan", "overlap", "huge", "unknown-z", "zero-z", "empty", "blown-up", "flat", "ragged"]
    table = table_of([good.copy() for _ in names], names)
    table.at[0, "frac_coords"] = [float("nan")] * len(table.frac_coords[0])
    frac = np.reshape(table.frac_coords[1], (-1, 3)).copy()
    frac[1] = frac[0] + 1e-3
    table.at[1, "frac_coords"] = frac.reshape(-1).tolist()
    big = rocksalt().make_supercell([4, 4, 4])  # 512 sites
    table.loc[2, ["species", "frac_coords", "lattice"]] = crystals.from_structures([big], ["huge"], "g").iloc[0][
        ["species", "frac_coords", "lattice"]].to_numpy()
    table.at[3, "species"] = [150] * len(table.species[3])
    table.at[4, "species"] = [0] + list(table.species[4][1:])
    table.at[5, "species"], table.at[5, "frac_coords"] = [], []
    table.at[6, "lattice"] = (np.reshape(table.lattice[6], (3, 3)) * 1e6).reshape(-1).tolist()  # 4e6 A cell
    table.at[7, "lattice"] = [5.0, 0, 0, 5.0, 1e-9, 0, 0, 0, 5.0]  # two parallel lattice vectors
    table.at[8, "frac_coords"] = list(table.frac_coords[8][:-3])  # one coordinate triple short
    screened, funnel = screen(table, table_of([silicon()], ["ref"]), SETTINGS)
    reasons = dict(zip(screened.id, screened.drop_reason))
    assert reasons == {"nan": "non_finite_lattice", "overlap": "invalid_structure", "huge": None,
                       "unknown-z": "unknown_element", "zero-z": "unknown_element", "empty": "no_atoms",
                       "blown-up": "implausible_cell", "flat": "degenerate_cell", "ragged": "malformed_row"}
    # 512 valid sites are fine here; size limits belong to relaxation
    details = dict(zip(screened.id, screened.drop_detail))
    assert "atomic number 150" in details["unknown-z"] and "atomic number 0" in details["zero-z"]
    assert funnel["steps"] == {"generated": 9, "valid": 1, "unique": 1, "novel": 1}
    assert not screened.set_index("id").loc[["empty", "zero-z", "blown-up"], "valid"].any()
