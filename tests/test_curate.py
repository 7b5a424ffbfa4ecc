"""Curation of small hand-made data sets: every record is kept or dropped with a reason."""

import gzip
import io
import tarfile

import numpy as np
import pandas as pd
import pytest
from conftest import bad_cifs, perovskite, rocksalt, silicon, to_cif
from pymatgen.core import Lattice, Structure

from onnes import crystals
from onnes.config import validate
from onnes.data import curate as curate_module
from onnes.data.curate import curate
from onnes.catalogue import DATASET_FILES

MP20_COLUMNS = ["material_id", "formation_energy_per_atom", "band_gap", "pretty_formula",
                "e_above_hull", "elements", "cif", "spacegroup.number"]


def mp20_row(material_id, structure_or_cif, e_form=-1.0):
    cif = structure_or_cif if isinstance(structure_or_cif, str) else to_cif(structure_or_cif)
    return {"material_id": material_id, "formation_energy_per_atom": e_form, "band_gap": 0.0,
            "pretty_formula": "", "e_above_hull": 0.01, "elements": "[]", "cif": cif, "spacegroup.number": 1}


def write_csv_gz(path, rows, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, compression="gzip")


@pytest.fixture
def mp20_cache(tmp_path):
    files = DATASET_FILES["mp20"]
    first = [mp20_row("mp-1", rocksalt()), mp20_row("mp-2", silicon()), mp20_row("mp-3", perovskite())]
    second = [
        mp20_row("mp-1", rocksalt()),  # repeated id
        mp20_row("mp-4", rocksalt(5.66)),  # same structure, other id
        mp20_row("mp-5", rocksalt().to_conventional()),  # same structure, conventional cell
        mp20_row("mp-6", rocksalt().make_supercell([2, 2, 2])),  # 64 sites > max_atoms
    ]
    third = [mp20_row(f"bad-{reason}", cif) for reason, cif in bad_cifs().items()]
    for path, rows in zip(files, [first, second, third, [], []]):
        write_csv_gz(tmp_path / path, rows, MP20_COLUMNS)
    return tmp_path


def expected_mp20_drops():
    return {"duplicate": 3, "too_many_atoms": 1, **{reason: 1 for reason in bad_cifs()}}


def test_mp20_report_counts_every_record(mp20_cache):
    result = curate("mp20", mp20_cache, validate({})["data"])
    report = result.report
    assert report["records_in"] == 3 + 4 + len(bad_cifs())
    assert report["kept"] == 3
    assert report["dropped"] == expected_mp20_drops()
    assert report["records_in"] == report["kept"] + report["dropped_total"]
    assert sorted(result.kept.id) == ["mp-1", "mp-2", "mp-3"]
    assert result.kept.e_form_per_atom.tolist() == [-1.0, -1.0, -1.0]
    dupes = result.dropped[result.dropped.drop_reason == "duplicate"]
    assert set(dupes.id) == {"mp-1", "mp-4", "mp-5"}
    assert "mp-1" in dupes[dupes.id == "mp-4"].drop_detail.iloc[0]
    # The kept table is a valid crystal table.
    assert [s.composition.reduced_formula for s in crystals.to_structures(result.kept)] == ["NaCl", "Si", "SrTiO3"]


def test_parallel_workers_give_identical_results(mp20_cache, monkeypatch):
    data_config = validate({})["data"]
    serial = curate("mp20", mp20_cache, data_config, workers=1)
    monkeypatch.setattr(curate_module, "MIN_RECORDS_FOR_POOL", 0)
    parallel = curate("mp20", mp20_cache, data_config, workers=2)
    pd.testing.assert_frame_equal(serial.kept, parallel.kept)
    assert serial.report["dropped"] == parallel.report["dropped"]


def test_max_records_and_dedup_switch(mp20_cache):
    config = validate({"data": {"per_dataset": {"mp20": {"max_records": 5}}, "dedup": {"enabled": False}}})
    report = curate("mp20", mp20_cache, config["data"]).report
    assert report["records_in"] == 5
    assert report["dropped"] == {"duplicate": 1}  # only the repeated id
    assert report["kept"] == 4


def mgb2():
    return Structure(Lattice.hexagonal(3.086, 3.524), ["Mg", "B", "B"],
                     [[0, 0, 0], [1 / 3, 2 / 3, 0.5], [2 / 3, 1 / 3, 0.5]])


@pytest.fixture
def sc_cache(tmp_path):
    tar_path, tc_path, supercon_path = (tmp_path / p for p in DATASET_FILES["3dsc"])
    doped = mgb2()
    doped.replace(0, {"Mg": 0.9, "Al": 0.1})
    cifs = {
        "Mg1B2-MP-mp-763.cif": to_cif(mgb2()),
        "Cu1O2Sr1-MP-mp-1.cif": to_cif(perovskite()),
        "Pb1Te1-MP-mp-2.cif": to_cif(rocksalt()),
        "Nb3Sn1-MP-mp-3.cif": to_cif(silicon()),
        "Al0.1B2Mg0.9-MP-mp-763-synth_doped.cif": to_cif(doped),
        "Broken-MP-mp-9.cif": "data_broken\n_cell_length_a 3.0\n",
    }
    tar_path.parent.mkdir(parents=True)
    with tarfile.open(tar_path, "w:gz") as archive:
        for name, text in cifs.items():
            data = text.encode()
            info = tarfile.TarInfo(f"cifs/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    table = '"# comment line",,,\nformula_sc,tc,database_id_2,synth_doped\n' \
            "Mg1B2,39,ICSD-1,False\nCu1O2Sr1,0,ICSD-2,False\nAl0.1B2Mg0.9,30,ICSD-3,True\n"
    tc_path.write_bytes(gzip.compress(table.encode()))
    supercon_path.write_text("name,Tc\nSn1Nb3,18.1\nNb3Sn1,17.9\nMg1B2,1.0\n")
    return tmp_path


def test_3dsc_tc_labels(sc_cache):
    result = curate("3dsc", sc_cache, validate({})["data"])
    kept = result.kept.set_index("formula_sc")
    assert kept.loc["Mg1B2", "tc_K"] == 39.0  # 3DSC table beats the SuperCon record
    assert kept.loc["Cu1O2Sr1", "tc_K"] == 0.0  # measured non-superconductor stays 0
    assert np.isnan(kept.loc["Pb1Te1", "tc_K"])  # no match: unknown, not 0
    assert kept.loc["Nb3Sn1", "tc_K"] == pytest.approx(18.0)  # SuperCon fallback, median
    assert kept.loc["Nb3Sn1", "tc_source"] == "supercon"
    assert kept.loc["Mg1B2", "material_id"] == "mp-763"
    assert result.report["dropped"] == {"partial_occupancy": 1, "parse_error": 1}
    assert result.report["tc"]["labelled"] == 3 and result.report["tc"]["unknown"] == 1
