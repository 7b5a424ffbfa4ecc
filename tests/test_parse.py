"""One raw CIF -> one row, or a rejection with the right reason (never an exception)."""

import re

import numpy as np
import pytest
from conftest import bad_cifs, perovskite, rocksalt, to_cif
from pymatgen.core import Lattice, Structure

from onnes.config import allowed_elements, validate
from onnes.data.parse import Checks, parse_record

CHECKS = Checks(allowed_elements=allowed_elements(validate({})["data"]), max_atoms=20)


def record(cif: str, rid: str = "x") -> dict:
    return {"id": rid, "source": "test", "cif": cif, "labels": {"e_form_per_atom": -1.5}}


def test_good_cif_gives_contract_row():
    row = parse_record(record(to_cif(perovskite())), CHECKS)
    assert "drop_reason" not in row
    assert row["species"] == [38, 22, 8, 8, 8]
    assert len(row["frac_coords"]) == 15 and len(row["lattice"]) == 9
    assert row["formula"] == "SrTiO3" and row["num_sites"] == 5
    assert row["e_form_per_atom"] == -1.5
    assert np.allclose(np.reshape(row["lattice"], (3, 3)), np.eye(3) * 3.9)


def test_coordinates_are_wrapped_into_unit_interval():
    s = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[-0.25, 1.0, 0.0], [0.5, 0.5, 1.5]])
    row = parse_record(record(to_cif(s)), CHECKS)
    frac = np.reshape(row["frac_coords"], (-1, 3))
    assert ((frac >= 0) & (frac < 1)).all()


@pytest.mark.parametrize("reason", sorted(bad_cifs()))
def test_bad_input_is_dropped_with_reason(reason):
    row = parse_record(record(bad_cifs()[reason]), CHECKS)
    assert row["drop_reason"] == reason, row.get("drop_detail")
    assert row["drop_detail"]


@pytest.mark.parametrize("text", ["", "   \n", "hello world", "data_x\n_cell_length_a 3\n", "\x00\xff" * 50])
def test_garbage_is_a_parse_error(text):
    assert parse_record(record(text), CHECKS)["drop_reason"] == "parse_error"


def test_too_many_atoms():
    big = rocksalt().make_supercell([2, 2, 2])  # 64 sites
    assert parse_record(record(to_cif(big)), CHECKS)["drop_reason"] == "too_many_atoms"


def test_disallowed_element():
    checks = Checks(allowed_elements=frozenset({"Na", "Cl"}), max_atoms=20)
    assert parse_record(record(to_cif(perovskite())), checks)["drop_reason"] == "disallowed_element"


def test_single_site_overlapping_its_periodic_image():
    s = Structure(Lattice.tetragonal(0.4, 5.0), ["Cu"], [[0, 0, 0]])  # volume 0.8 A^3
    assert parse_record(record(to_cif(s)), CHECKS)["drop_reason"] == "overlapping_atoms"


def test_drop_details_read_as_reasons_not_internal_errors():
    good = to_cif(perovskite())
    lines = good.splitlines()
    site = next(i for i, line in enumerate(lines) if line.strip().startswith("Ti "))
    nan_coordinate = "\n".join(lines[:site] + [lines[site].replace("0.50000000", "nan", 1)] + lines[site + 1:])
    row = parse_record(record(nan_coordinate), CHECKS)
    assert row["drop_reason"] == "non_finite_lattice" and "coordinates" in row["drop_detail"]
    short_row = "\n".join(lines[:site] + [" ".join(lines[site].split()[:-2])] + lines[site + 1:])
    row = parse_record(record(short_row), CHECKS)
    assert row["drop_reason"] == "parse_error"
    assert "zip()" not in row["drop_detail"]
    row = parse_record(record(float("nan")), CHECKS)  # a CSV cell with no CIF in it
    assert row["drop_reason"] == "parse_error" and "no CIF text" in row["drop_detail"]


def test_impossible_cells_are_dropped():
    good = to_cif(perovskite())
    angle = re.sub(r"_cell_angle_alpha\s+\S+", "_cell_angle_alpha   200.0", good)
    assert parse_record(record(angle), CHECKS)["drop_reason"] == "degenerate_cell"
    huge = good
    for axis in "abc":
        huge = re.sub(rf"_cell_length_{axis}\s+\S+", f"_cell_length_{axis}   1e9", huge)
    assert parse_record(record(huge), CHECKS)["drop_reason"] == "implausible_cell"
