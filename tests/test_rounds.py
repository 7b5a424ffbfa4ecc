"""Rounds (loop): the entries later rounds add, and what a round's DFT teaches the next."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from pymatgen.core import Composition, Lattice, Structure

from onnes import config as cfg
from onnes.crystals import structure_columns
from onnes.dft.feedback import feed_back
from onnes.graph import CampaignGraph
from onnes.matching import Tolerances, find_known
from onnes.screen.hull import ConvexHull, evaluate_stability


def demo_config(**loop):
    config = cfg.deep_merge(yaml.safe_load((REPO / "config/config.yaml").read_text()),
                            yaml.safe_load((REPO / "config/demo.yaml").read_text()))
    config["loop"] = loop
    return cfg.validate(config, samplers=False)


def test_each_round_fine_tunes_the_previous_one_on_its_samples():
    config = demo_config(rounds=3, models=["flow", "flow-tc-uncond"], train={"steps": 300})
    models = config["models"]
    assert config["active_models"][-4:] == ["flow-r1", "flow-tc-uncond-r1", "flow-r2", "flow-tc-uncond-r2"]
    # round 1 fine-tunes the weights round 0 samples, on round 0's samples
    assert models["flow-r1"]["reward"]["source"] == "flow" and models["flow-r1"]["reward"]["samples"] == "flow"
    assert models["flow-tc-uncond-r1"]["reward"]["source"] == "flow-tc-cfg"
    assert models["flow-tc-uncond-r1"]["reward"]["samples"] == "flow-tc-uncond"
    assert models["flow-r2"]["reward"]["source"] == models["flow-r2"]["reward"]["samples"] == "flow-r1"
    # the looping model's data set and sampling (unguided), the loop's reward and training
    r2 = models["flow-tc-uncond-r2"]
    assert r2["dataset"] == "3dsc" and r2["sample"]["target"] is None and r2["sample"]["steps"] == 50
    assert r2["reward"]["kind"] == "tc_and_stability" and r2["reward"]["mix_data"] == 0.5
    assert r2["train"]["steps"] == 300 and r2["train"]["batch_size"] == 32  # the rest: flow-tc-cfg's own
    assert r2["adapter"]["base"] is None and r2["conditioning"]["columns"] == []
    graph = CampaignGraph(config)
    assert [graph.round_of(n) for n in ("flow", "pyxtal", "flow-r1", "flow-tc-uncond-r2")] == [0, 0, 1, 2]
    assert graph.round_sources(2) == ["flow-r2", "flow-tc-uncond-r2"]
    assert "flow-r1" not in graph.round_sources(0) and "substitution" in graph.round_sources(0)
    # every round trains before the others (the chain) and the steering table pairs rounds
    assert {"flow", "flow-r1", "flow-r2"} <= graph.chain_trainings()
    assert graph.steering_pairs()["flow-r2"] == "flow-r1"


def test_a_finished_round_is_unchanged_when_rounds_grow():
    two, four = demo_config(rounds=2, models=["flow"]), demo_config(rounds=4, models=["flow"])
    assert two["models"]["flow-r1"] == four["models"]["flow-r1"]
    # what the jobs of round 1 receive does not depend on the round count either
    from onnes.stage_settings import settings_argument

    for rule in ("train_model", "sample_shard", "reward_set"):
        assert settings_argument(two, rule, model="flow-r1") == settings_argument(four, rule, model="flow-r1")
    assert settings_argument(two, "dft_select", rnd="") == settings_argument(four, "dft_select", rnd="")


def test_expanding_again_is_a_no_op_and_a_clash_is_named():
    config = demo_config(rounds=2, models=["flow"])
    again = cfg.validate(copy.deepcopy(config), samplers=False)
    assert again == config
    clash = copy.deepcopy(config)
    clash["models"]["flow-r1"]["train"]["steps"] = 7
    with pytest.raises(cfg.ConfigError, match="'models.flow-r1': the name of round 1"):
        cfg.validate(clash, samplers=False)


@pytest.mark.parametrize("loop, message", [
    ({"rounds": 2, "models": ["nope"]}, "'loop.models': 'nope' is not defined"),
    ({"rounds": 2, "models": ["flow-tc-cfg"]}, "samples with a target"),
    ({"rounds": 2, "models": []}, "more than one round needs loop.models"),
    ({"rounds": 2, "models": ["flow"], "train": {"stepz": 3}}, "unknown config key 'loop.train.stepz'"),
    ({"rounds": 2, "models": ["flow"], "reward": {"kind": "luck"}}, "loop.reward.kind"),
    ({"rounds": 2, "models": ["diffusion"]}, "'diffusion' is not among active_models"),
])
def test_a_wrong_loop_is_named(loop, message):
    config = cfg.deep_merge(yaml.safe_load((REPO / "config/config.yaml").read_text()),
                            yaml.safe_load((REPO / "config/demo.yaml").read_text()))
    config["loop"] = loop
    if "diffusion" in loop["models"]:
        config["active_models"] = ["flow"]
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.validate(config, samplers=False)


def test_later_rounds_send_their_own_best_to_dft():
    config = demo_config(rounds=3, models=["flow"], dft_top_k=2)
    graph = CampaignGraph(config)
    assert graph.dft_rounds() == [0, 1, 2]
    assert [graph.round_dft_top_k(k) for k in range(3)] == [1, 2, 2]
    assert CampaignGraph(demo_config(rounds=3, models=["flow"], dft_top_k=0)).dft_rounds() == [0]


# -- DFT feedback: a planted phase moves the next round's hull ------------------------
POTENTIALS = {"Al": -3.75, "Zn": -1.26}  # eV/atom, the elements' reference energies


def references(*rows):
    return pd.DataFrame([{"id": i, "source": "mp20_hull_refs", "e_form_per_atom": e,
                          "composition": json.dumps(c, sort_keys=True)} for i, c, e in rows])


def alzn(a=2.9, id_="x", source="flow"):
    structure = Structure(Lattice.tetragonal(a, 3.3), ["Al", "Zn"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return {**structure_columns(structure), "id": id_, "source": source}


def dft_row(code, **energies):
    row = {**alzn(id_="c1"), "dft_status": "success", "dft_code": code}
    structure = Structure(Lattice.tetragonal(2.95, 3.3), ["Al", "Zn"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    row.update(dft_species=[13, 30], dft_frac_coords=structure.frac_coords.ravel().tolist(),
               dft_lattice=structure.lattice.matrix.ravel().tolist(), **energies)
    return row


def candidate_energy(e_form):
    """A later candidate AlZn's total energy (eV, MP2020 footing) at formation energy e_form."""
    return 2 * (e_form + (POTENTIALS["Al"] + POTENTIALS["Zn"]) / 2)


def known_table():
    """The campaign's known crystals: AlZn in the rock-salt structure only."""
    rocksalt = Structure(Lattice([[0, 2.1, 2.1], [2.1, 0, 2.1], [2.1, 2.1, 0]]), ["Al", "Zn"],
                         [[0, 0, 0], [0.5, 0.5, 0.5]])
    return pd.DataFrame([{**structure_columns(rocksalt), "id": "mp20:rocksalt", "source": "mp20", "split": "train"}])


def test_a_dft_verified_phase_moves_the_next_rounds_hull_and_a_later_candidate_is_judged_against_it():
    base = references(("mp-1", {"Al": 3, "Zn": 1}, -0.02))
    dft = pd.DataFrame([dft_row("vasp", e_form_per_atom_dft=-0.20),
                        {**dft_row("cp2k"), "id": "c2", "source": "kldm"},
                        {**dft_row("vasp"), "id": "c3", "dft_status": "failed"}])
    refs, known, summary = feed_back(base, known_table(), {0: dft}, POTENTIALS)

    # the VASP phase (MP2020 formation energy) is on the hull; the CP2K one known only, said why
    assert refs.source.tolist() == ["mp20_hull_refs", "dft-round-0"]
    placed = {p["id"]: p for p in summary["phases"]}
    assert placed["dft-r0:flow:c1"]["on_hull_references"] and placed["dft-r0:flow:c1"]["moves_hull"]
    assert not placed["dft-r0:kldm:c2"]["on_hull_references"]
    assert "not on the MP2020 footing" in placed["dft-r0:kldm:c2"]["placement"]
    assert summary["known_added"] == 2 and summary["hull_entries_added"] == 1  # the failed run teaches nothing

    # a later candidate AlZn at -0.15 eV/atom: below the old hull, 0.05 above the new one
    later = pd.DataFrame([{**alzn(a=3.1, id_="later"), "energy": candidate_energy(-0.15)}])
    before = evaluate_stability(later, ConvexHull(base, POTENTIALS)).iloc[0]
    after = evaluate_stability(later, ConvexHull(refs, POTENTIALS)).iloc[0]
    assert before.e_above_hull < 0 and after.e_above_hull == pytest.approx(0.05)
    assert after.decomposition == "AlZn"

    # and one DFT computed (either code) is known: proposed again, it is not novel
    again = pd.DataFrame([{**dft_row("cp2k"), "id": "again", "source": "flow-r1"}])
    assert find_known(again, known_table(), Tolerances()) == set()
    assert find_known(again, known, Tolerances()) == {"again"}


def test_a_phase_from_another_code_enters_at_its_height_above_its_own_decomposition():
    base = references(("mp-1", {"Al": 1, "Zn": 1}, -0.10))
    dft = pd.DataFrame([dft_row("cp2k", e_above_hull_dft_local=-0.03)])
    refs, _, summary = feed_back(base, known_table(), {1: dft}, POTENTIALS)
    assert refs.e_form_per_atom.iloc[-1] == pytest.approx(-0.13)
    assert summary["phases"][0]["e_above_previous_hull"] == pytest.approx(-0.03)
    assert refs.source.iloc[-1] == "dft-round-1"


def test_no_dft_rows_leave_the_references_as_they_were():
    base = references(("mp-1", {"Al": 1, "Zn": 1}, -0.10))
    empty = pd.DataFrame(columns=["id", "species", "frac_coords", "lattice", "source", "dft_status"])
    refs, known, summary = feed_back(base, known_table(), {0: empty}, POTENTIALS)
    assert refs.equals(base) and len(known) == 1 and summary["known_added"] == 0
    assert np.isclose(ConvexHull(refs, POTENTIALS).hull_energy(Composition("AlZn"))[0], -0.10)
