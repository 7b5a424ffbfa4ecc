"""A corpus of bad rows and bad files through every command that reads a crystal table:
each bad row is dropped, rejected or skipped with a reason, each bad file is one error
line with exit status 2, and no command crashes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import perovskite, rocksalt, silicon, stage_json
from test_tc import SETTINGS as TC_SETTINGS
from test_tc import synthetic_supercon

from onnes import crystals
from onnes.cli import main
from onnes.tc.predictor import train_and_evaluate, training_table

GOOD = ["nacl", "si", "srtio3"]
BAD = {  # id -> the reason the shared row check gives
    "empty": "no_atoms", "z-zero": "unknown_element", "z-150": "unknown_element",
    "nan-lattice": "non_finite_lattice", "nan-coords": "non_finite_lattice", "flat": "degenerate_cell",
    "blown-up": "implausible_cell", "ragged": "malformed_row",
}


def corpus() -> pd.DataFrame:
    table = crystals.from_structures([rocksalt(), silicon(), perovskite()] + [rocksalt()] * len(BAD),
                                     GOOD + list(BAD), "user")
    bad = table.set_index("id")
    bad.at["empty", "species"], bad.at["empty", "frac_coords"] = [], []
    bad.at["z-zero", "species"] = [0, 11, 11, 11, 17, 17, 17, 17]
    bad.at["z-150", "species"] = [150] * 8
    bad.at["nan-lattice", "lattice"] = [np.nan] * 9
    bad.at["nan-coords", "frac_coords"] = [np.nan] * 24
    bad.at["flat", "lattice"] = [5.0, 0, 0, 5.0, 0, 0, 0, 0, 5.0]
    bad.at["blown-up", "lattice"] = [1e6, 0, 0, 0, 1e6, 0, 0, 0, 1e6]
    bad.at["ragged", "frac_coords"] = [0.0] * 21
    return bad.reset_index()


def test_the_row_check_names_every_bad_row():
    problems = crystals.row_problems(corpus()).set_index(corpus().id)
    assert problems.reason[GOOD].isna().all()
    assert problems.reason[list(BAD)].to_dict() == BAD


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    table = corpus()
    crystals.write_table(table, root / "corpus.parquet")
    screened = table.assign(valid=True, unique=True, novel=True, msun=True, candidate=True, e_above_hull=0.0,
                            num_sites=[len(s) for s in table.species],
                            formula=["NaCl", "Si", "SrTiO3"] + [""] * len(BAD))  # as screening writes it
    crystals.write_table(screened, root / "screened.parquet")
    crystals.write_table(screened.assign(tc_acquisition=np.arange(len(table), 0, -1.0)), root / "ranked.parquet")
    (root / "zero.parquet").write_bytes(b"")
    pd.DataFrame({"name": ["x"]}).to_parquet(root / "other.parquet")
    train_and_evaluate(training_table(synthetic_supercon(), None), TC_SETTINGS, seed=0, out_dir=root / "tc")
    return root


def test_screening_drops_each_bad_row_with_its_reason(files):
    assert main(["screen", "match", "--samples", str(files / "corpus.parquet"), "--reference",
                 str(files / "corpus.parquet"), "--out", str(files / "matched.parquet")]) == 0
    matched = pd.read_parquet(files / "matched.parquet").set_index("id")
    assert matched.drop_reason[list(BAD)].to_dict() == BAD
    assert matched.valid[GOOD].all()


def test_relaxation_rejects_each_bad_row_naming_it(files):
    assert main(["relax", "--table", str(files / "corpus.parquet"), "--out", str(files / "relaxed.parquet"),
                 "--settings", stage_json("relax_shard", {"relax": {"max_steps": 3, "threads": 1}})]) == 0
    relaxed = pd.read_parquet(files / "relaxed.parquet").set_index("id")
    assert (relaxed.relax_status[list(BAD)] == "rejected").all()
    for rid, reason in BAD.items():
        assert relaxed.relax_error[rid].startswith(reason)
    assert relaxed.relax_status[GOOD].isin(["converged", "max_steps"]).all()


def test_tc_stage_and_dft_selection_pass_over_bad_rows(files):
    assert main(["tc", "rank", "--screened", str(files / "screened.parquet"), "--predictor", str(files / "tc"),
                 "--predicted", str(files / "predicted.parquet"), "--out", str(files / "tc_ranked.parquet")]) == 0
    predicted = pd.read_parquet(files / "predicted.parquet").set_index("id")
    assert predicted.tc_pred_mean[list(BAD)].isna().all() and predicted.tc_pred_mean[GOOD].notna().all()
    assert main(["dft", "select", "--ranked", f"corpus={files / 'ranked.parquet'}", "--out",
                 str(files / "dft.parquet"),
                 "--settings", stage_json("dft_select", {"dft": {"code": "vasp", "top_k": 3}})]) == 0
    picked = pd.read_parquet(files / "dft.parquet").set_index("id")
    assert set(picked.index[picked.dft_slot >= 0]) == set(GOOD)


def test_export_and_split_go_on_past_bad_rows(files, tmp_path):
    assert main(["data", "export", "--table", str(files / "corpus.parquet"), "--format", "poscar",
                 "--out", str(tmp_path / "poscars")]) == 0
    report = json.loads((tmp_path / "poscars/export.json").read_text())
    assert report["written"] == 3 and report["skipped"] == len(BAD)
    assert main(["data", "split", "--dataset", "mp20", "--input", str(files / "corpus.parquet"),
                 "--out-dir", str(tmp_path / "split")]) == 0


COMMANDS = {
    "screen match": lambda f, out: ["screen", "match", "--samples", str(f), "--reference", str(f), "--out", str(out)],
    "relax": lambda f, out: ["relax", "--table", str(f), "--out", str(out)],
    "export": lambda f, out: ["data", "export", "--table", str(f), "--format", "extxyz", "--out", str(out)],
    "split": lambda f, out: ["data", "split", "--dataset", "mp20", "--input", str(f), "--out-dir", str(out)],
    "dft select": lambda f, out: ["dft", "select", "--ranked", f"x={f}", "--out", str(out)],
    "tc rank": lambda f, out: ["tc", "rank", "--screened", str(f), "--predictor", str(out), "--predicted",
                               str(out), "--out", str(out)],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("name, message", [("zero.parquet", "not a readable Parquet table"),
                                           ("other.parquet", "not a crystal table"),
                                           ("missing.parquet", "no such file")])
def test_a_file_that_is_not_a_crystal_table_is_one_line(files, tmp_path, capsys, command, name, message):
    assert main(COMMANDS[command](files / name, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_split_takes_a_composition_table(tmp_path):
    """SuperCon's curated table has compositions, not structures: split reads it."""
    table = pd.DataFrame({"id": [f"sc-{i}" for i in range(20)], "formula": [f"Nb{i + 1}Sn" for i in range(20)],
                          "tc_K": np.linspace(0, 18, 20), "source": "supercon"})
    table.to_parquet(tmp_path / "curated.parquet")
    assert main(["data", "split", "--dataset", "supercon", "--input", str(tmp_path / "curated.parquet"),
                 "--out-dir", str(tmp_path)]) == 0
    assert sum(len(pd.read_parquet(tmp_path / f"{part}.parquet")) for part in ("train", "val", "test")) == 20
