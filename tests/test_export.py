"""`onnes data export`: every format reads back to the same table; bad rows are skipped
with a reason; folders are written atomically and never over a user's files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import perovskite, rocksalt, silicon
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from onnes import crystals
from onnes.cli import main
from onnes.config import ConfigError, allowed_elements, validate
from onnes.data.export import EXPORT_FORMATS, export_table
from onnes.data.importer import ImportSettings, import_structures
from onnes.data.parse import Checks

SETTINGS = ImportSettings(checks=Checks(allowed_elements=allowed_elements(validate({})["data"]), max_atoms=50))


@pytest.fixture
def table():
    out = crystals.from_structures([rocksalt(), silicon(), perovskite()], ["nacl", "si/1", "sto"], "gen")
    out["tc_K"] = [np.nan, 0.0, 12.5]
    out["e_form_per_atom"] = [-2.1, 0.0, -3.4]
    return out


def with_bad_rows(table):
    bad = crystals.from_structures([rocksalt(), rocksalt()], ["empty", "nan-cell"], "gen")
    bad.at[0, "species"], bad.at[0, "frac_coords"] = [], []
    bad.at[1, "lattice"] = [float("nan")] * 9
    return crystals.pd.concat([table, bad], ignore_index=True)


def out_path(tmp_path, fmt):
    return tmp_path / {"extxyz": "t.extxyz", "ase-db": "t.db", "pymatgen-json": "t.json"}.get(fmt, fmt)


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_import_export_import_gives_the_same_table(table, tmp_path, fmt):
    exported = export_table(with_bad_rows(table), fmt, out_path(tmp_path, fmt))
    assert exported.written == ["nacl", "si/1", "sto"]
    assert [(s["id"], s["reason"]) for s in exported.skipped] == [("empty", "no_atoms"),
                                                                  ("nan-cell", "non_finite_lattice")]
    back = import_structures([out_path(tmp_path, fmt)], SETTINGS).kept
    assert len(back) == 3
    order = {"nacl": 0, "si_1": 1, "si/1": 1, "sto": 2}
    back = back.sort_values("id", key=lambda ids: ids.map(order)).reset_index(drop=True)
    for (_, original), (_, restored) in zip(table.iterrows(), back.iterrows()):
        a, b = crystals.to_structure(original), crystals.to_structure(restored)
        if fmt == "cif-symmetrized":  # the conventional cell may differ: the same crystal
            assert StructureMatcher().fit(a, b)
            continue
        assert np.allclose(a.lattice.matrix, b.lattice.matrix, atol=1e-5)
        assert restored["species"] == original["species"]
        assert np.allclose(np.mod(a.frac_coords - b.frac_coords + 0.5, 1) - 0.5, 0, atol=1e-5)
    if fmt in ("extxyz", "ase-db", "pymatgen-json"):  # the formats that carry labels and ids
        assert back["id"].tolist() == ["nacl", "si/1", "sto"]
        assert back["e_form_per_atom"].tolist() == [-2.1, 0.0, -3.4]
        assert np.isnan(back["tc_K"][0]) and back["tc_K"][2] == 12.5


def test_folder_export_is_atomic_and_never_writes_over_other_files(table, tmp_path):
    out = tmp_path / "cifs"
    export_table(table, "cif", out)
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "nacl.cif", "si_1.cif", "sto.cif"]
    export_table(table.iloc[:1], "poscar", out)  # a previous export is replaced whole
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "nacl.vasp"]
    assert Structure.from_file(out / "nacl.vasp").composition.reduced_formula == "NaCl"
    assert [p.name for p in tmp_path.iterdir()] == ["cifs"]  # no staging folders left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="other files"):
        export_table(table, "cif", mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_colliding_ids_get_distinct_files(table, tmp_path):
    table["id"] = ["a/b", "a_b", "a/b"]
    export_table(table, "cif", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_b.cif", "a_b~2.cif", "a_b~3.cif",
                                                                   "export.json"]


def test_cli_export_reports_skipped_rows(table, tmp_path):
    crystals.write_table(with_bad_rows(table), tmp_path / "t.parquet")
    assert main(["data", "export", "--table", str(tmp_path / "t.parquet"), "--format", "extxyz",
                 "--out", str(tmp_path / "t.extxyz"), "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["written"] == 3 and report["skipped_by_reason"] == {"no_atoms": 1, "non_finite_lattice": 1}


def test_not_a_crystal_table_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "empty.parquet").write_bytes(b"")
    assert main(["data", "export", "--table", str(tmp_path / "empty.parquet"), "--format", "cif",
                 "--out", str(tmp_path / "x")]) == 2
    assert "not a readable Parquet table" in capsys.readouterr().err
    crystals.pd.DataFrame({"name": ["x"]}).to_parquet(tmp_path / "other.parquet")
    assert main(["data", "export", "--table", str(tmp_path / "other.parquet"), "--format", "cif",
                 "--out", str(tmp_path / "x")]) == 2
    assert "not a crystal table" in capsys.readouterr().err
