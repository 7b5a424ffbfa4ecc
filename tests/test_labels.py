"""Tc labels: 3DSC join by formula_sc, SuperCon fallback by composition, 0 vs unknown."""

import math

import pandas as pd
import pytest

from onnes.data import labels


@pytest.fixture
def tc_table():
    return pd.DataFrame(
        {"formula_sc": ["Mg1B2", "Mg1B2", "Cu1Sr1O2", "Al1Cu1"], "tc": [39.0, 39.0, 0.0, 1.5]}
    )


@pytest.fixture
def supercon():
    return pd.DataFrame({"name": ["Nb3Sn1", "Sn1Nb3", "Y1Ba2Cu3O7", "Zr1"], "Tc": [18.0, 17.0, 92.0, "x"]})


def structures(*formulas):
    return pd.DataFrame({"id": [f"s{i}" for i in range(len(formulas))], "formula_sc": list(formulas)})


def test_exact_join_zero_is_measured_and_no_match_is_unknown(tc_table, supercon):
    out = labels.attach_tc(structures("Mg1B2", "Cu1Sr1O2", "Pb1Te1"), tc_table, supercon)
    assert out.tc_K.tolist()[:2] == [39.0, 0.0]  # 0 K: a measured non-superconductor
    assert math.isnan(out.tc_K[2])  # no record anywhere: unknown, never 0
    assert out.tc_source.tolist() == ["3dsc_icsd", "3dsc_icsd", None]
    assert out.tc_n_records.tolist() == [2, 1, 0]


def test_fallback_to_supercon_by_composition(tc_table, supercon):
    out = labels.attach_tc(structures("Nb3Sn1", "Ba2Cu3O7Y1"), tc_table, supercon)
    assert out.tc_K[0] == pytest.approx(17.5)  # median of two SuperCon records
    assert out.tc_spread_K[0] == pytest.approx(1.0)
    assert out.tc_K[1] == 92.0  # element order differs, composition is the same
    assert out.tc_source.tolist() == ["supercon", "supercon"]


def test_primary_table_wins_over_fallback(tc_table):
    supercon = pd.DataFrame({"name": ["Mg1B2"], "Tc": [10.0]})
    out = labels.attach_tc(structures("Mg1B2"), tc_table, supercon)
    assert out.tc_K[0] == 39.0 and out.tc_source[0] == "3dsc_icsd"


def test_composition_key():
    assert labels.composition_key("Ba0.4K0.6Fe2As2") == labels.composition_key("As2Fe2K0.6Ba0.4")
    assert labels.composition_key("Xx2O") is None
    assert labels.composition_key("Y2C2Br0.5!1.5") is None


def test_curate_supercon_counts_every_row(tmp_path):
    path = tmp_path / "supercon.csv"
    pd.DataFrame(
        {"name": ["Nb3Sn1", "Qq1O2", "Am1", "La2Cu1O4", "Zz", "Pb1"], "Tc": [18.0, 3.0, 1.0, "nan", 1.0, 0.0]}
    ).to_csv(path, index=False)
    from onnes.config import allowed_elements, validate

    kept, dropped = labels.curate_supercon(path, allowed_elements(validate({})["data"]))
    assert kept.name.tolist() == ["Nb3Sn1", "Pb1"]
    assert kept.tc_K.tolist() == [18.0, 0.0]
    assert dict(zip(dropped.name, dropped.drop_reason)) == {
        "Qq1O2": "unknown_element",
        "Am1": "disallowed_element",
        "La2Cu1O4": "invalid_tc",
        "Zz": "unknown_element",
    }
