"""DFT stage: basis pairing, candidate selection, a real CP2K calculation on Si, failures
recorded (never dropped), the VASP preset's inputs and flow, and parsing of stored
VASP task documents onto the MP hull."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, silicon, stage_json
from pymatgen.core import Composition, Lattice, Structure

from onnes import config as cfg
from onnes.crystals import structure_columns
from onnes.dft.cp2k import UnsupportedElements, basis_and_potential, prepare_data_dir
from onnes.dft.results import gather, task_fields
from onnes.dft.local_hull import known_by_id
from onnes.dft.runner import run_candidate, run_slot
from onnes.dft.selection import select_candidates
from onnes.dft.settings import DftSettings
from onnes.screen.hull import ConvexHull

CP2K_SOURCE = Path("/usr/share/cp2k")
needs_cp2k_data = pytest.mark.skipif(not (CP2K_SOURCE / "BASIS_MOLOPT").is_file(),
                                     reason="CP2K data files missing: apt-get install cp2k-data")
needs_cp2k = pytest.mark.skipif(shutil.which("cp2k.psmp") is None,
                                reason="CP2K missing: apt-get install cp2k cp2k-data")
# Small enough that a Si2 single point takes seconds on one core.
FAST_CP2K = {"basis": "SZV-MOLOPT-SR-GTH", "cutoff": 200, "rel_cutoff": 30, "kpoint_density": 10,
             "max_scf": 60, "eps_scf": 1.0e-5}


def settings(**dft) -> DftSettings:
    return DftSettings.from_config(cfg.load(None, {"dft": dft}))


def row_of(structure: Structure, id_: str, **extra) -> pd.Series:
    return pd.Series({"id": id_, "source": "test", "num_sites": len(structure),
                      **structure_columns(structure), **extra})


def test_an_mpi_launcher_goes_before_the_cp2k_command_only():
    assert settings().with_launcher("srun").cp2k["command"] == "srun cp2k.psmp"
    assert settings().with_launcher(None).cp2k["command"] == "cp2k.psmp"
    assert settings(code="vasp").with_launcher("srun").vasp["command"] == "srun vasp_std"


def test_one_rank_cp2k_runs_without_the_srun_step_variables():
    from onnes.dft.cp2k import singleton_environment

    step = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "PMI_FD": "3", "PMIX_RANK": "0", "PATH": "/usr/bin",
            "OMP_NUM_THREADS": "1"}
    assert singleton_environment(step) == {"PATH": "/usr/bin", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def cp2k_data(tmp_path_factory) -> Path:
    if not (CP2K_SOURCE / "BASIS_MOLOPT").is_file():
        pytest.skip("CP2K data files missing: apt-get install cp2k-data")
    return prepare_data_dir(CP2K_SOURCE, tmp_path_factory.mktemp("cp2k") / "elements")


def test_named_basis_pairs_with_the_potential_of_its_valence(cp2k_data):
    pairs = basis_and_potential(["Si", "Mo"], cp2k_data, "DZVP-MOLOPT-SR-GTH")
    data = {el: json.loads(json.dumps(__import__("yaml").safe_load((cp2k_data / el).read_text())))
            for el in ("Si", "Mo")}
    for el, valence in (("Si", 4), ("Mo", 14)):
        assert data[el]["basis_sets"][pairs[el]["basis"]]["name"] == "DZVP-MOLOPT-SR-GTH"
        assert data[el]["potentials"][pairs[el]["potential"]]["name"] == f"GTH-PBE-q{valence}"


def test_elements_without_a_basis_are_named(cp2k_data):
    # atomate2's UZH set has no lanthanide basis sets.
    with pytest.raises(UnsupportedElements, match="Gd"):
        basis_and_potential(["Gd", "S"], cp2k_data, None)
    assert set(basis_and_potential(["Si"], cp2k_data, None)) == {"Si"}


def diamond_si() -> Structure:
    """Si in the diamond structure, primitive cell (2 atoms)."""
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]).get_primitive_structure()


def gds() -> Structure:
    return Structure(Lattice.cubic(5.5), ["Gd", "S"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_selection_takes_the_best_runnable_and_keeps_the_passed_over(cp2k_data):
    big = silicon() * (2, 2, 2)
    ranked = {
        "a": pd.DataFrame([row_of(big, "a-big", tc_acquisition=30.0), row_of(silicon(), "a-si", tc_acquisition=5.0)]),
        "b": pd.DataFrame([row_of(gds(), "b-gd", tc_acquisition=20.0), row_of(silicon(), "b-si", tc_acquisition=10.0)]),
        "c": pd.DataFrame(),
    }
    picked = select_candidates(ranked, settings(top_k=2, max_sites=8, cp2k={"basis": None}), cp2k_data)
    assert picked.id.tolist() == ["a-big", "b-gd", "b-si", "a-si"]
    assert picked.dft_slot.tolist() == [-1, -1, 0, 1]
    assert "16 sites > dft.max_sites 8" in picked.dft_skip_reason[0]
    assert "Gd" in picked.dft_skip_reason[1]
    assert picked.dft_skip_reason[2:].isna().all()
    excluding = select_candidates(ranked, settings(top_k=1, max_sites=8, exclude_elements=["Gd"]), cp2k_data)
    assert excluding.dft_skip_reason[1] == "Gd in dft.exclude_elements" and excluding.dft_slot.tolist() == [-1, -1, 0]


def test_broken_rows_get_no_dft_slot(cp2k_data):
    rows = [row_of(silicon(), name, tc_acquisition=50.0 - k) for k, name in enumerate(["nan", "flat", "z0", "ok"])]
    rows[0]["lattice"] = [float("nan")] * 9
    rows[1]["lattice"] = [4.0, 0, 0, 4.0, 0, 0, 0, 0, 4.0]  # two identical vectors: zero volume
    rows[2]["species"] = [0, 14]
    picked = select_candidates({"a": pd.DataFrame(rows)}, settings(top_k=1, max_sites=8, cp2k={"basis": None}),
                               cp2k_data)
    assert picked.dft_slot.tolist() == [-1, -1, -1, 0]
    reasons = picked.dft_skip_reason.tolist()
    assert reasons[0].startswith("non_finite_lattice") and reasons[1].startswith("degenerate_cell")
    assert "atomic number 0" in reasons[2]


@needs_cp2k
def test_cp2k_si_static_runs_for_real_into_the_job_store(cp2k_data, tmp_path):
    si = diamond_si()
    assert len(si) == 2
    record = run_candidate(row_of(si, "si"), settings(calculation="static", retries=0, cp2k=FAST_CP2K),
                           tmp_path, cp2k_data)
    assert record["dft_status"] == "success", record["dft_error"]
    assert record["dft_task_state"] == "successful"
    # PBE/GTH total energy of diamond Si (4 valence electrons; -106.18 eV/atom in this
    # minimal basis, -106.79 with atomate2's default basis and k-mesh).
    assert -107.5 < record["dft_energy_per_atom"] < -105.5
    assert record["dft_volume_change"] == pytest.approx(0.0) and record["dft_rms_displacement"] < 1e-6
    docs = json.loads((tmp_path / "store/docs.json").read_text())
    assert [d["output"]["state"] for d in docs if d.get("output")] == ["successful"]
    assert (Path(record["dft_dir"].split(":", 1)[1]) / "cp2k.out.gz").is_file()  # atomate2 gzips outputs


def si_hull_and_known():
    """A hull whose Si ground state is the reference entry mp-149, and the known crystals
    holding its diamond structure (as the campaign's known table names it)."""
    references = pd.DataFrame([{"id": "mp-149", "source": "mp20_hull_refs", "e_form_per_atom": 0.0,
                                "composition": json.dumps({"Si": 2})},
                               {"id": "mp-165", "source": "mp20_hull_refs", "e_form_per_atom": 0.3,
                                "composition": json.dumps({"Si": 8})}])
    known = pd.DataFrame([{**structure_columns(diamond_si()), "id": "mp20:mp-149", "source": "mp20", "split": "train"}])
    return ConvexHull(references, {"Si": -5.42}), known_by_id(known)


def test_an_element_decomposes_into_its_ground_state_entry():
    hull, _ = si_hull_and_known()
    assert hull.decomposition(Composition("Si")) == [("mp-149", "Si", 1.0)]
    lifted = ConvexHull(hull_refs_without_ground_state(), {"Si": -5.42})
    assert lifted.decomposition(Composition("Si")) == [(None, "Si", 1.0)]  # only a polymorph above it


def hull_refs_without_ground_state():
    return pd.DataFrame([{"id": "mp-165", "source": "mp20_hull_refs", "e_form_per_atom": 0.3,
                          "composition": json.dumps({"Si": 8})}])


@needs_cp2k
def test_a_cp2k_candidate_is_measured_against_its_products_at_the_same_settings(cp2k_data, tmp_path):
    """Compressed diamond Si against diamond Si, both by CP2K at the same settings: the local
    hull's energy is the compression energy, positive; no product structure, no figure.
    (Compressed, not stretched: this minimal basis puts Si's equilibrium above 5.43 A.)"""
    strained = diamond_si()
    strained.apply_strain(-0.05)
    candidates = pd.DataFrame([row_of(strained, "si-strained", dft_slot=0)])
    hull, known = si_hull_and_known()
    fast = settings(calculation="static", retries=0, cp2k=FAST_CP2K)
    record = run_slot(candidates, 0, fast, tmp_path, 1, cp2k_data, hull=hull, known=known)
    assert record["dft_status"] == "success" and record["dft_local_status"] == "ok"
    products = json.loads(record["dft_local_products"])
    assert [(p["id"], p["status"]) for p in products] == [("mp-149", "success")]
    assert record["e_above_hull_dft_local"] == pytest.approx(
        record["dft_energy_per_atom"] - products[0]["energy_per_atom"])
    assert 0.005 < record["e_above_hull_dft_local"] < 1.0  # 5 % compression costs energy
    assert (tmp_path / "test/si-strained/products/mp-149/store/docs.json").is_file()

    elsewhere = run_slot(candidates, 0, fast, tmp_path / "again", 1, cp2k_data,
                         hull=ConvexHull(hull_refs_without_ground_state(), {"Si": -5.42}), known=known)
    assert elsewhere["dft_status"] == "success" and pd.isna(elsewhere["e_above_hull_dft_local"])
    assert elsewhere["dft_local_status"].startswith("product structure not on hand: Si")


def test_bad_input_is_caught_retried_and_recorded(cp2k_data, tmp_path):
    """GdS handed to the run directly (selection would pass it over): atomate2's UZH set
    has no Gd basis, so input generation fails; both attempts are recorded."""
    uzh = dict(FAST_CP2K, basis=None)
    record = run_candidate(row_of(gds(), "gd"), settings(calculation="static", retries=1, cp2k=uzh),
                           tmp_path, cp2k_data)
    assert record["dft_status"] == "failed" and record["dft_attempts"] == 2
    assert "no CP2K basis/pseudopotential for Gd" in record["dft_error"]
    assert len(record["dft_errors"]) == 2


@needs_cp2k
def test_a_cp2k_abort_is_caught_and_recorded(cp2k_data, tmp_path):
    """CP2K rejects the input (negative plane-wave cutoff) and stops; custodian gives up
    and the record keeps the error instead of the stage crashing."""
    valid = settings(calculation="static", retries=0, cp2k=dict(FAST_CP2K, custodian_max_errors=1))
    # The schema refuses a negative cutoff in a config; build the bad input past it.
    broken = dataclasses.replace(valid, cp2k=dict(valid.cp2k, cutoff=-200.0))
    record = run_candidate(row_of(diamond_si(), "si"), broken,
                           tmp_path, cp2k_data)
    assert record["dft_status"] in {"failed", "unconverged"}
    assert record["dft_attempts"] == 1 and "dft_energy" not in record
    assert "CP2K aborted: The cutoff values for the multi-grids" in record["dft_error"]


def test_gather_keeps_every_candidate_with_its_status():
    candidates = pd.DataFrame([row_of(silicon(), "x", dft_slot=-1, dft_skip_reason="too big"),
                               row_of(silicon(), "y", dft_slot=0, dft_skip_reason=None),
                               row_of(silicon(), "z", dft_slot=1, dft_skip_reason=None)])
    records = [{"id": "y", "dft_slot": 0, "dft_status": "failed", "dft_error": "SCF", "dft_code": "cp2k"},
               {"id": "z", "dft_slot": 1, "dft_status": "success", "dft_error": None, "dft_code": "cp2k",
                "dft_energy": -1.0},
               {"dft_slot": 2, "dft_status": "no_candidate"}]
    table = gather(candidates, records)
    assert table.set_index("id").dft_status.to_dict() == {"x": "skipped", "y": "failed", "z": "success"}
    assert table.set_index("id").dft_error["x"] == "too big"
    assert "e_above_hull_dft" not in table  # CP2K energies never go on the MP hull


def vasp_preset() -> DftSettings:
    config = cfg.load(REPO / "config/gpu.yaml", {"dft": {"vasp": {"inputs_only": True}}})
    return DftSettings.from_config(config)


def test_vasp_preset_writes_mp_inputs_and_the_flow(tmp_path):
    preset = vasp_preset()
    assert preset.code == "vasp" and preset.vasp["command"] == "srun vasp_std"
    fe2o3 = Structure(Lattice.hexagonal(5.03, 13.7), ["Fe", "Fe", "O", "O", "O"],
                      [[0, 0, 0.355], [0, 0, 0.855], [0.306, 0, 0.25], [0, 0.306, 0.25], [0.694, 0.694, 0.25]])
    record = run_candidate(row_of(fe2o3, "fe2o3"), preset, tmp_path)
    assert record["dft_status"] == "inputs_written"
    jobs = sorted((tmp_path / "inputs").iterdir())
    assert [p.name for p in jobs] == ["0-MP_GGA_relax_1", "1-MP_GGA_relax_2", "2-MP_GGA_static"]
    for job in jobs:
        assert {"INCAR", "KPOINTS", "POSCAR"} <= {p.name for p in job.iterdir()}
        assert (job / "POTCAR").exists() or (job / "POTCAR.spec").read_text().split() == ["Fe_pv", "O"]
        incar = (job / "INCAR").read_text()
        assert "ENCUT = 520" in incar and "LDAU = True" in incar and "NCORE = 4" in incar
        # MP's U for Fe in oxides (Wang et al. 2006 fit): 5.3 eV.
        assert "LDAUU = 5.3 0\n" in incar
    assert "NSW = 0" in (jobs[2] / "INCAR").read_text()
    flow = json.loads((tmp_path / "flow.json").read_text())
    text = json.dumps(flow)
    assert text.count('"vasp_cmd": "srun vasp_std"') == 3 and text.count('"max_errors": 5') == 3


def vasp_task_doc(structure: Structure, energy: float) -> dict:
    """A stored atomate2 VASP TaskDoc, as JobStore.get_output returns it (the fields the
    DFT stage reads)."""
    return {"output": {"energy": energy, "structure": structure.as_dict()}, "state": "successful",
            "dir_name": "cluster:/scratch/run", "entry": {"parameters": {"run_type": "GGA", "hubbards": {}}}}


@pytest.mark.mirror
def test_stored_vasp_outputs_land_on_the_mp_hull(mirror, tmp_path):
    from maggma.stores import JSONStore

    from onnes.screen.hull import ConvexHull, build_references, elemental_potentials

    elements_path = mirror / "hull_refs/mp_elemental_reference_entries_2023-02-07.json.gz"
    potentials = elemental_potentials(elements_path)
    si = silicon()
    store = JSONStore(str(tmp_path / "docs.json"), read_only=False, key="uuid")
    store.connect()
    for uuid, shift in (("ground", 0.0), ("above", 0.1)):  # eV/atom above elemental Si
        store.update([{"uuid": uuid, "output": vasp_task_doc(si, len(si) * (potentials["Si"] + shift))}])
    store.close()
    reopened = JSONStore(str(tmp_path / "docs.json"), key="uuid")
    reopened.connect()
    records = []
    for uuid in ("ground", "above"):
        fields, _ = task_fields(reopened.query_one({"uuid": uuid})["output"])
        records.append({"id": uuid, "dft_status": "success", "dft_code": "vasp", **fields})
    candidates = pd.DataFrame([row_of(si, "ground", dft_slot=0, dft_skip_reason=None),
                               row_of(si, "above", dft_slot=1, dft_skip_reason=None)])
    hull = ConvexHull(build_references(mirror / "hull_refs/mp20_formation_energies.parquet"), potentials)
    table = gather(candidates, records, hull).set_index("id")
    assert table.e_above_hull_dft["ground"] == pytest.approx(0.0, abs=1e-6)
    assert table.e_above_hull_dft["above"] == pytest.approx(0.1, abs=1e-6)
    assert (table.hull_status_dft == "ok").all()


def test_a_mongo_store_needs_a_uri():
    with pytest.raises(cfg.ConfigError, match="dft.store.uri"):
        cfg.load(None, {"dft": {"store": {"type": "mongo"}}})


def test_cp2k_relax_flow_relaxes_then_runs_a_static_on_the_result(cp2k_data):
    from onnes.dft.cp2k import make_flow

    relax_settings = settings(calculation="relax", cp2k=dict(FAST_CP2K, max_relax_steps=7))
    flow = make_flow(diamond_si(), relax_settings, cp2k_data)
    relax, static = flow.jobs
    assert (relax.name, static.name) == ("relax", "static")
    assert static.function_args[0].uuid == relax.uuid  # the static takes the relaxed structure
    deck = str(relax.function.__self__.input_set_generator.get_input_set(diamond_si()).cp2k_input)
    assert "RUN_TYPE GEO_OPT" in deck and "MAX_ITER 7" in deck and "CUTOFF 200" in deck
    assert static.function.__self__.run_cp2k_kwargs["max_errors"] == 3


def test_a_campaign_with_nothing_ranked_ends_with_an_empty_dft_table(tmp_path):
    from onnes.cli import main
    from onnes.crystals import read_table, write_table

    empty = pd.DataFrame([row_of(silicon(), "x", tc_acquisition=1.0)]).iloc[:0]
    write_table(empty, tmp_path / "ranked.parquet")
    campaign = {"dft": {"top_k": 2, "code": "vasp"}}
    assert main(["dft", "select", "--ranked", f"flow={tmp_path / 'ranked.parquet'}",
                 "--out", str(tmp_path / "candidates.parquet"), "--settings", stage_json("dft_select", campaign)]) == 0
    for slot in (0, 1):
        assert main(["dft", "run", "--candidates", str(tmp_path / "candidates.parquet"), "--slot", str(slot),
                     "--work-root", str(tmp_path), "--out", str(tmp_path / f"{slot}.json"),
                     "--settings", stage_json("dft_run", campaign)]) == 0
        assert json.loads((tmp_path / f"{slot}.json").read_text())["dft_status"] == "no_candidate"
    assert main(["dft", "gather", "--candidates", str(tmp_path / "candidates.parquet"), "--results",
                 str(tmp_path / "0.json"), str(tmp_path / "1.json"), "--out", str(tmp_path / "dft.parquet")]) == 0
    assert len(read_table(tmp_path / "dft.parquet")) == 0
