"""Convex hull and S.U.N.: a hand-made binary system with a known hull, flagged missing
references, the MP2020 footing, and the funnel's later steps."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import perovskite, rocksalt, silicon, stage_json
from pymatgen.core import Composition

from onnes import crystals
from onnes.config import validate
from onnes.matching import reduced_formulas
from onnes.screen.funnel import _confirmed_level, finish, judge_prerelaxed, select_for_relaxation, wilson_interval
from onnes.screen.hull import ConvexHull, build_references, element_counts, evaluate_stability

# A-B toy system on real elements: Na and Cl at 0, NaCl at -2.0 eV/atom, NaCl3 at -0.5
# (above the NaCl-Cl tie line, which is -1.0 at x_Cl = 3/4).
POTENTIALS = {"Na": -1.3, "Cl": -1.8, "Sr": -1.7, "Ti": -7.9, "O": -4.9}


def toy_hull() -> ConvexHull:
    refs = pd.DataFrame({
        "id": ["nacl", "nacl3"], "source": "test",
        "composition": [json.dumps({"Na": 1, "Cl": 1}), json.dumps({"Na": 1, "Cl": 3})],
        "e_form_per_atom": [-2.0, -0.5],
    })
    return ConvexHull(refs, POTENTIALS)


def test_e_above_hull_of_known_points():
    hull = toy_hull()
    assert hull.e_above_hull(Composition("NaCl"), -2.0)[0] == pytest.approx(0.0)
    e_hull, products = hull.e_above_hull(Composition("NaCl3"), -0.5)
    assert e_hull == pytest.approx(0.5)
    assert products == "Cl + NaCl"
    assert hull.e_above_hull(Composition("NaCl"), -2.3)[0] == pytest.approx(-0.3)  # below the hull


def test_hull_agrees_with_pymatgen_phase_diagram():
    """The LP hull against pymatgen's Qhull construction on a random ternary system."""
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram

    rng = np.random.default_rng(1)
    compositions = [Composition({"Na": int(a), "Cl": int(b), "O": int(c)})
                    for a, b, c in rng.integers(0, 4, size=(40, 3)) if a + b + c > 0]
    energies = rng.uniform(-2.0, 0.5, len(compositions))
    refs = pd.DataFrame({"id": [f"r{k}" for k in range(len(compositions))], "source": "t",
                         "composition": [json.dumps({el.symbol: n for el, n in c.items()}) for c in compositions],
                         "e_form_per_atom": energies})
    hull = ConvexHull(refs, POTENTIALS)
    entries = [PDEntry(Composition(el), 0.0) for el in ("Na", "Cl", "O")]
    entries += [PDEntry(c, e * c.num_atoms) for c, e in zip(compositions, energies)]
    diagram = PhaseDiagram(entries)
    for formula in ("NaClO", "Na2O", "NaClO4", "Na3Cl", "ClO2"):
        candidate = PDEntry(Composition(formula), -0.7 * Composition(formula).num_atoms)
        expected = diagram.get_e_above_hull(candidate, allow_negative=True)
        assert hull.e_above_hull(Composition(formula), -0.7)[0] == pytest.approx(expected, abs=1e-6)


def test_formation_energy_uses_elemental_references():
    hull = toy_hull()
    # 2 Na + 2 Cl with total energy 2(-1.3) + 2(-1.8) - 4 * 2.0 -> -2.0 eV/atom
    energy = 2 * -1.3 + 2 * -1.8 - 4 * 2.0
    assert hull.formation_energy(Composition("Na2Cl2"), energy) == pytest.approx(-2.0)


def test_missing_elemental_reference_is_flagged_not_invented():
    table = crystals.from_structures([perovskite(), rocksalt()], ["srtio3", "nacl"], "test")
    table["energy"] = [-40.0, -8 * 3.55]
    hull = ConvexHull(toy_hull_refs(), {k: v for k, v in POTENTIALS.items() if k != "Ti"})
    result = evaluate_stability(table, hull)
    assert result.hull_status.tolist() == ["missing_reference: Ti", "ok"]
    assert np.isnan(result.e_above_hull[0]) and np.isfinite(result.e_above_hull[1])


def toy_hull_refs():
    return pd.DataFrame({"id": ["nacl"], "source": "t", "composition": [json.dumps({"Na": 1, "Cl": 1})],
                         "e_form_per_atom": [-2.0]})


def test_rows_without_energy_are_counted():
    table = crystals.from_structures([rocksalt()], ["nacl"], "test")
    table["energy"] = [float("nan")]
    assert evaluate_stability(table, toy_hull()).hull_status.tolist() == ["no_energy"]


def test_reference_table_from_mirror(mirror):
    refs = build_references(mirror / "hull_refs/mp20_formation_energies.parquet")
    assert len(refs) > 30_000 and refs.id.is_unique
    assert np.isfinite(refs.e_form_per_atom).all()
    assert element_counts(["Na", "Cl", "Cl"]) == {"Na": 1, "Cl": 2}


def test_mp20_dft_energies_reproduce_mp_e_above_hull(mirror):
    """The hull implementation: MP's own DFT formation energies on our hull give MP's
    e_above_hull (MP-20 rows come from the same references)."""
    from onnes.screen.hull import elemental_potentials

    mp20 = pd.read_parquet(mirror / "hull_refs/mp20_formation_energies.parquet").sample(200, random_state=0)
    hull = ConvexHull(build_references(mirror / "hull_refs/mp20_formation_energies.parquet"),
                      elemental_potentials(mirror / "hull_refs/mp_elemental_reference_entries_2023-02-07.json.gz"))
    computed = [hull.e_above_hull(Composition(element_counts(s)), e)[0]
                for s, e in zip(mp20.species_at_sites, mp20.formation_energy_per_atom)]
    error = np.abs(np.array(computed) - mp20.e_above_hull.to_numpy())
    assert error.mean() < 0.02 and (error <= 0.1).mean() > 0.95


def matched_table():
    table = crystals.from_structures([rocksalt(), rocksalt(5.7), perovskite(), rocksalt(6.0)],
                                     ["a", "b", "c", "d"], "test")
    table["formula"] = reduced_formulas(table)
    table["valid_struct"] = [True, True, True, False]
    table["valid"] = [True, True, True, False]
    table["unique"] = [True, False, True, False]
    table["novel"] = [True, False, True, False]
    table["drop_reason"] = [None, "duplicate", None, "invalid_structure"]
    table["valid_comp"] = table.valid
    return table


def relax_results(table, statuses, lattice_a=None):
    return pd.DataFrame({"id": ["a", "c"], "relax_status": statuses,
                         "relax_converged": [s == "converged" for s in statuses], "energy": [-1.0, -2.0],
                         "species": [table.species[0], table.species[2]],
                         "frac_coords": [table.frac_coords[0], table.frac_coords[2]],
                         "lattice": [lattice_a or table.lattice[0], table.lattice[2]]})


def prerelaxed(table, relaxed, e_above_hull, known=None):
    """judge_prerelaxed with a training split and a known set that hold nothing alike
    unless ``known`` is given."""
    stability = pd.DataFrame({"e_above_hull": e_above_hull, "hull_status": ["ok"] * len(e_above_hull)})
    train = crystals.from_structures([silicon()], ["si"], "train")
    known = train if known is None else known
    settings = {**validate({})["screen"], "select": "unique"}
    return judge_prerelaxed(table, relaxed, stability, train, known, {"NaCl"}, settings), settings


def test_select_for_relaxation_takes_the_step_and_cap():
    table = matched_table()
    assert select_for_relaxation(table, "unique", None).id.tolist() == ["a", "c"]
    assert select_for_relaxation(table, "valid", 2).id.tolist() == ["a", "b"]


def test_only_converged_relaxations_are_judged_stable():
    """a converged within the threshold: MSUN; c stopped at max_steps within it: counted
    apart as unconverged, never stable."""
    table = matched_table()
    judged, settings = prerelaxed(table, relax_results(table, ["converged", "max_steps"],
                                                       [5.5, 0, 0, 0, 5.5, 0, 0, 0, 5.5]), [0.05, 0.02])
    screened, funnel = finish(judged, settings)
    assert funnel["steps"] == {"generated": 4, "valid": 3, "unique": 2, "novel": 2, "relaxed": 2, "converged": 1,
                               "msun": 1}
    stability = funnel["stability"]
    assert stability["unconverged"] == 1 and stability["unconverged_within_threshold"] == 1
    assert stability["pre_relaxation"]["msun"]["count"] == 1 and stability["pre_relaxation"]["sun"]["count"] == 0
    assert stability["pre_relaxation"]["metastable"]["count"] == 1
    # 1 of the 2 relaxed novel structures: Wilson's (0.095, 0.905); rate = fraction x novelty rate 0.5
    msun = stability["pre_relaxation"]["msun"]
    assert msun["fraction"] == pytest.approx(0.5) and msun["rate"] == pytest.approx(0.25)
    assert msun["fraction_ci95"] == pytest.approx([0.0945, 0.9055], abs=1e-3)
    row = screened.set_index("id")
    assert row.drop_reason["c"] == "relax_max_steps" and row.drop_reason["a"] is None
    assert row.known_composition["a"] and not row.known_composition["c"]
    assert row.lattice["a"][0] == 5.5 and row.lattice_generated["a"][0] == pytest.approx(5.64)
    assert row.candidate["a"] and not row.candidate["c"]


def test_a_sample_that_relaxes_onto_a_known_crystal_is_not_novel():
    """The relaxed geometry of a matches a crystal planted in another data set's test
    split: novel against the training split (the literature's test), not against
    everything known, so neither MSUN nor a candidate."""
    table = matched_table()
    relaxed = relax_results(table, ["converged", "converged"], [5.5, 0, 0, 0, 5.5, 0, 0, 0, 5.5])
    planted = crystals.from_structures([silicon(), rocksalt(5.5)], ["mp20:si", "3dsc:nacl-test"], "known")
    judged, settings = prerelaxed(table, relaxed, [0.05, -0.02], known=planted)
    row = judged.set_index("id")
    assert row.novel_relaxed["a"] and not row.novel_known["a"] and row.known_as["a"] == "3dsc:nacl-test"
    assert not row.msun["a"] and row.drop_reason["a"] == "known_after_relaxation"
    assert row.msun["c"] and row.sun["c"]
    _, funnel = finish(judged, settings)
    assert funnel["stability"]["known_after_relaxation"] == 1
    assert funnel["stability"]["pre_relaxation"]["msun_train_novelty"]["count"] == 2
    assert funnel["stability"]["pre_relaxation"]["msun"]["count"] == 1


def confirm_results(table, statuses, e_above_hull):
    results = relax_results(table, statuses)
    return results, pd.DataFrame({"e_above_hull": e_above_hull, "hull_status": ["ok", "ok"]})


def test_confirmation_needs_both_mlips_and_reports_their_agreement():
    table = matched_table()
    judged, settings = prerelaxed(table, relax_results(table, ["converged", "converged"]), [0.05, -0.02])
    confirmed, confirmed_stability = confirm_results(table, ["converged", "converged"], [0.2, -0.01])
    screened, funnel = finish(judged, settings, confirmed, confirmed_stability, {"note": "protocol"})
    row = screened.set_index("id")
    assert not row.msun_confirmed["a"] and row.drop_reason["a"] == "unstable_confirmed"
    assert row.msun_confirmed["c"] and row.sun_confirmed["c"]
    assert row.candidate.tolist() == [False, False, True, False]
    assert funnel["steps"]["msun"] == 2 and funnel["steps"]["confirmed"] == 1
    stability = funnel["stability"]
    assert stability["confirmed"]["msun"]["count"] == 1 and stability["confirmed"]["sun"]["count"] == 1
    assert stability["confirmed"]["msun"]["confirmed_of"] == [2, 2]
    agreement = stability["agreement"]
    assert agreement["at_0"] == {"both": 1, "pre_only": 0, "confirm_only": 0, "neither": 1}
    assert agreement["at_0.1"] == {"both": 1, "pre_only": 1, "confirm_only": 0, "neither": 0}
    assert agreement["shift_median"] == pytest.approx((0.15 + 0.01) / 2)
    assert funnel["protocol"] == {"note": "protocol"}


def test_a_confirmation_that_did_not_converge_confirms_nothing():
    table = matched_table()
    judged, settings = prerelaxed(table, relax_results(table, ["converged", "converged"]), [0.05, -0.02])
    confirmed, confirmed_stability = confirm_results(table, ["max_steps", "diverged"], [0.0, -5.0])
    screened, _ = finish(judged, settings, confirmed, confirmed_stability)
    row = screened.set_index("id")
    assert not row.msun_confirmed.any()
    assert row.drop_reason["a"] == "confirm_max_steps" and row.drop_reason["c"] == "confirm_diverged"


def test_a_capped_confirmation_widens_the_interval_honestly():
    """40 of 100 relaxed novel rows are MSUN, 10 of them confirmed, 5 pass: 0.4 x 0.5 = 0.2,
    with a MOVER interval wider than Wilson's on 20 of 100 (what confirming all would give)."""
    level = _confirmed_level(5, 10, 40, 100, 1.0)
    assert level["fraction"] == pytest.approx(0.2)
    low, high = level["fraction_ci95"]
    uncapped = level["fraction_ci95_if_all_confirmed"]
    assert low < 0.2 < high and high - low > uncapped[1] - uncapped[0]
    assert uncapped == pytest.approx(list(wilson_interval(20, 100)))
    assert _confirmed_level(0, 10, 40, 100, 1.0)["fraction_ci95"][0] == 0.0
    # none of the rows confirmed: no estimate, only the pre-relaxation bound
    unknown = _confirmed_level(0, 0, 40, 100, 1.0)
    assert unknown["fraction"] is None and unknown["fraction_ci95"] == pytest.approx([0.0, wilson_interval(40, 100)[1]])


def test_wilson_interval_matches_published_values():
    # Newcombe, Stat. Med. 17, 857 (1998), Table I: 81/263 -> 0.2553-0.3662; 0/10 -> 0-0.2775
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_an_early_rejection_counts_as_relaxed_and_never_stable():
    table = matched_table()
    relaxed = relax_results(table, ["converged", "rejected_early"])
    relaxed["relax_error"] = [None, "1.8 eV/atom above the hull after 30 steps"]
    # a rejected structure whose energy happened to read low is still not stable
    judged, settings = prerelaxed(table, relaxed, [0.05, 0.05])
    screened, funnel = finish(judged, settings)
    assert funnel["steps"]["relaxed"] == 2 and funnel["steps"]["msun"] == 1
    assert funnel["relaxation"]["status"] == {"converged": 1, "rejected_early": 1}
    assert funnel["drop_reasons"]["rejected_early"] == 1
    assert not screened.set_index("id").stable["c"]


@pytest.mark.mirror
def test_bad_rows_pass_through_the_whole_funnel_with_reasons(mirror, tmp_path):
    """NaN coordinates, overlapping atoms, a 512-atom cell and an element CHGNet does not
    know (Am) in one shard: every row is counted with a reason; nothing crashes."""
    pytest.importorskip("chgnet")
    from pymatgen.core import Lattice, Structure

    from onnes.cli import main

    good = [rocksalt(5.5), perovskite()]
    americium = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.4), ["Am", "O"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    big = Structure.from_spacegroup("Fm-3m", Lattice.cubic(6.6), ["K", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    big.make_supercell([4, 4, 4])  # 512 atoms
    table = crystals.from_structures([*good, americium, big, rocksalt(), rocksalt()],
                                     ["nacl", "srtio3", "amo2", "big", "nan", "overlap"], "t")
    table.at[4, "frac_coords"] = [float("nan")] * len(table.frac_coords[4])
    frac = np.reshape(table.frac_coords[5], (-1, 3)).copy()
    frac[1] = frac[0] + 0.01
    table.at[5, "frac_coords"] = frac.reshape(-1).tolist()
    reference = crystals.from_structures([silicon()], ["si"], "t")
    crystals.write_table(table, tmp_path / "samples.parquet")
    crystals.write_table(reference, tmp_path / "train.parquet")
    campaign = {"relax": {"select": "valid", "max_steps": 20}}

    def run(rule):
        return ["--settings", stage_json(rule, campaign)]

    assert main(["screen", "match", "--samples", str(tmp_path / "samples.parquet"), "--reference",
                 str(tmp_path / "train.parquet"), "--out", str(tmp_path / "matched.parquet"),
                 *run("screen_match")]) == 0
    assert main(["relax", "--table", str(tmp_path / "matched.parquet"), "--out", str(tmp_path / "relax0.parquet"),
                 *run("relax_shard")]) == 0
    assert main(["screen", "hull-references", "--mp20", str(mirror / "hull_refs/mp20_formation_energies.parquet"),
                 "--out", str(tmp_path / "refs.parquet")]) == 0
    elements = str(mirror / "hull_refs/mp_elemental_reference_entries_2023-02-07.json.gz")
    hull = ["--references", str(tmp_path / "refs.parquet"), "--elements", elements]
    assert main(["screen", "known", "--tables", f"t/train={tmp_path / 'train.parquet'}",
                 "--out", str(tmp_path / "known.parquet")]) == 0
    novelty = ["--train", str(tmp_path / "train.parquet"), "--known", str(tmp_path / "known.parquet")]
    assert main(["screen", "stability", "--matched", str(tmp_path / "matched.parquet"), "--relaxed",
                 str(tmp_path / "relax0.parquet"), *hull, *novelty, "--out", str(tmp_path / "stability.parquet"),
                 *run("screen_stability")]) == 0
    assert main(["screen", "confirm", "--table", str(tmp_path / "stability.parquet"), *hull,
                 "--out", str(tmp_path / "confirm.parquet"), *run("confirm_candidates")]) == 0
    assert main(["screen", "finish", "--stability", str(tmp_path / "stability.parquet"), "--confirmed",
                 str(tmp_path / "confirm.parquet"), *hull, *novelty, "--out", str(tmp_path / "screened.parquet"),
                 "--funnel", str(tmp_path / "funnel.json"), *run("screen_finish")]) == 0
    screened = crystals.read_table(tmp_path / "screened.parquet").set_index("id")
    assert screened.drop_reason["nan"] == "non_finite_lattice"  # the shared row check names it
    assert screened.drop_reason["overlap"] == "invalid_structure"
    assert screened.drop_reason["big"] == "relax_rejected" and "512 atoms" in screened.relax_error["big"]
    assert screened.drop_reason["amo2"] == "relax_rejected" and "Z=95" in screened.relax_error["amo2"]
    assert screened.relaxed["nacl"] and np.isfinite(screened.e_above_hull["nacl"])
    funnel = json.loads((tmp_path / "funnel.json").read_text())
    assert funnel["steps"]["generated"] == 6 and funnel["steps"]["relaxed"] == 2
    assert sum(funnel["drop_reasons"].values()) + funnel["steps"]["confirmed"] == 6
    # every MSUN row went through the confirming MLIP (SevenNet-0, from the wheel)
    msun = screened.index[screened.msun]
    assert len(msun) and screened.confirm_mlip[msun].eq("sevennet-0").all()
    protocol = funnel["protocol"]
    assert protocol["pre_relaxation"]["name"] == "chgnet" and protocol["confirmation"]["name"] == "sevennet-0"
    assert protocol["confirmation"]["footing"] == "raw" and protocol["novelty"]["strict"]["size"] == 1
    assert protocol["hull"]["entries"] > 30_000
