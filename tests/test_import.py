"""`onnes data import`: a user's files -> crystal table; every record kept or dropped with a reason."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.db import connect
from ase.io import write
from conftest import bad_cifs, perovskite, rocksalt, silicon, to_cif
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from onnes import crystals
from onnes.cli import main
from onnes.config import allowed_elements, validate
from onnes.data.importer import ImportInputError, ImportSettings, find_files, import_structures
from onnes.data.parse import Checks

DATA = validate({})["data"]
SETTINGS = ImportSettings(checks=Checks(allowed_elements=allowed_elements(DATA), max_atoms=50), dedup=DATA["dedup"])


def atoms(structure: Structure, **info) -> Atoms:
    frame = AseAtomsAdaptor.get_atoms(structure)
    frame.info.update(info)
    return frame


@pytest.fixture
def collection(tmp_path):
    """A collaborator's folder: every format, good and bad records, a label CSV."""
    folder = tmp_path / "incoming"
    (folder / "cifs").mkdir(parents=True)
    (folder / "cifs" / "nacl.cif").write_text(to_cif(rocksalt()))
    (folder / "cifs" / "nacl_again.cif").write_text(to_cif(rocksalt(5.65)))  # a StructureMatcher duplicate
    for reason, text in bad_cifs().items():
        (folder / "cifs" / f"bad_{reason}.cif").write_text(text)
    angle = to_cif(perovskite()).replace("_cell_angle_alpha   90.00000000", "_cell_angle_alpha   200.0")
    assert angle != to_cif(perovskite())
    (folder / "cifs" / "bad_angle.cif").write_text(angle)
    (folder / "cifs" / "notes.txt").write_text("not a crystal")  # ignored: no known format

    write(str(folder / "POSCAR"), atoms(silicon()), format="vasp")
    write(str(folder / "CONTCAR_sto"), atoms(perovskite()), format="vasp")
    (folder / "POSCAR_unknown").write_text(
        "bad\n1.0\n4 0 0\n0 4 0\n0 0 4\nXx Cl\n1 1\nDirect\n0 0 0\n0.5 0.5 0.5\n")

    huge = rocksalt()
    huge.scale_lattice(huge.volume * 1e9)  # a unit slip: ~10^10 A^3 per atom
    empty = Atoms(cell=np.eye(3) * 4.0, pbc=True)
    barium = perovskite()
    barium.replace_species({"Sr": "Ba"})
    write(str(folder / "frames.extxyz"), [atoms(barium, id="bto-x", tc_K=0.5), atoms(huge, id="blown-up"),
                                          empty], format="extxyz")
    potassium, germanium = rocksalt(6.3), silicon()
    potassium.replace_species({"Na": "K"})
    germanium.replace_species({"Si": "Ge"})
    with connect(str(folder / "mine.db")) as db:
        db.write(atoms(potassium), name="kcl", e_form_per_atom=-2.2)
        db.write(atoms(germanium))

    mixed = perovskite()
    mixed.replace(1, {"Ti": 0.5, "Zr": 0.5})
    structures = {"nb": Structure(Lattice.cubic(3.3), ["Nb", "Nb"], [[0, 0, 0], [0.5, 0.5, 0.5]]).as_dict(),
                  "mixed": mixed.as_dict()}
    (folder / "structures.json").write_text(json.dumps(structures))
    (folder / "broken.json").write_text("{not json")

    labels = tmp_path / "labels.csv"
    pd.DataFrame({"id": ["nb", "nacl", "bto-x", "nobody"], "tc_K": [9.2, 0.0, 1.5, 3.0]}).to_csv(labels, index=False)
    return folder, labels


def test_every_record_is_kept_or_dropped_with_its_reason(collection):
    folder, labels = collection
    result = import_structures([folder], SETTINGS, labels)
    kept, dropped, report = result.kept, result.dropped, result.report
    assert report["records_in"] == len(kept) + len(dropped) == 20
    assert sorted(kept["id"]) == ["CONTCAR_sto", "POSCAR", "bto-x", "kcl", "mine:2", "nacl", "nb"]
    reasons = dict(zip(dropped["id"], dropped["drop_reason"]))
    assert reasons == {
        "nacl_again": "duplicate",  # StructureMatcher-equivalent to nacl
        **{f"bad_{reason}": reason for reason in bad_cifs()},
        "bad_angle": "degenerate_cell",
        "POSCAR_unknown": "unknown_element",
        "blown-up": "implausible_cell",
        "frames:2": "no_atoms",
        "mixed": "partial_occupancy",
        "broken.json": "parse_error",
    }
    assert dropped["drop_detail"].str.len().gt(0).all()
    assert dropped["file"].str.startswith(str(folder)).all()
    crystals.check_columns(kept)
    assert not kept["file"].isna().any()


def test_labels_come_from_the_files_and_the_csv(collection):
    folder, labels = collection
    kept = import_structures([folder], SETTINGS, labels).kept.set_index("id")
    assert kept.loc["nb", "tc_K"] == 9.2 and kept.loc["nacl", "tc_K"] == 0.0
    assert kept.loc["bto-x", "tc_K"] == 1.5  # the CSV wins over the extxyz info field (0.5)
    assert np.isnan(kept.loc["POSCAR", "tc_K"])
    assert kept.loc["kcl", "e_form_per_atom"] == -2.2
    report = import_structures([folder], SETTINGS, labels).report["labels"]
    assert report["columns"]["tc_K"] == 3 and report["csv_unmatched_ids"] == ["nobody"]


def test_globs_and_an_explicit_format(collection):
    folder, _ = collection
    assert [p.name for p in find_files([str(folder / "cifs" / "nacl*.cif")])] == ["nacl.cif", "nacl_again.cif"]
    poscars = find_files([folder / "POSCAR", folder / "CONTCAR_sto"], fmt="poscar")
    result = import_structures(poscars, ImportSettings(checks=SETTINGS.checks, fmt="poscar"))
    assert sorted(result.kept["formula"]) == ["Si", "SrTiO3"]


def test_inputs_that_name_nothing_are_an_error(tmp_path):
    with pytest.raises(ImportInputError, match="no such file"):
        find_files([tmp_path / "missing*.cif"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportInputError, match="without files of a known format"):
        find_files([tmp_path / "empty"])


def test_label_csv_must_not_overwrite_the_structure(tmp_path, collection):
    folder, _ = collection
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"id": ["nb"], "lattice": [1.0]}).to_csv(bad, index=False)
    with pytest.raises(ImportInputError, match="overwrite"):
        import_structures([folder], SETTINGS, bad)


def test_cli_writes_the_curation_layout_and_reports_user_errors(tmp_path, collection, capsys):
    folder, labels = collection
    out = tmp_path / "imported"
    assert main(["data", "import", str(folder), "--labels", str(labels), "--out-dir", str(out),
                 "--source", "collab"]) == 0
    table = crystals.read_table(out / "curated.parquet")
    assert len(table) == 7 and set(table["source"]) == {"collab"}
    report = json.loads((out / "curation.json").read_text())
    assert report["records_in"] == report["kept"] + report["dropped_total"] == 20
    assert len(pd.read_parquet(out / "dropped.parquet")) == 13
    assert main(["data", "import", str(tmp_path / "nothing_here"), "--out-dir", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_table_holds_no_disordered_sites_and_no_dummy_species():
    mixed = perovskite()
    mixed.replace(0, {"Sr": 0.5, "Ba": 0.5})
    with pytest.raises(ValueError, match="partially occupied"):
        crystals.from_structures([mixed], ["m"], "t")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dummy = Structure(Lattice.cubic(4.0), ["X", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match="not a chemical element"):
        crystals.from_structures([dummy], ["d"], "t")
