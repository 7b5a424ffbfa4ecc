"""The campaign page's parts that need no campaign: provenance in nested checkouts, the
hull context, and the measured tables' formatting. The page itself, on the demo's
outputs, is tested in test_workflow.py (headless Chromium included)."""

import subprocess

import numpy as np
import pandas as pd
import pytest

from onnes.report import hull, measured
from onnes.report.provenance import NOT_A_CHECKOUT, git_state


def git(cwd, *args):
    return subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def committed_repo(path):
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    (path / "file.txt").write_text(path.name)
    git(path, "add", "file.txt")
    git(path, "commit", "-q", "-m", "first")
    return git(path, "rev-parse", "HEAD")


def test_provenance_names_the_projects_own_commit_never_an_enclosing_one(tmp_path):
    outer = committed_repo(tmp_path / "outer")
    exported = tmp_path / "outer/exported-project"  # a copy of the project without its .git
    exported.mkdir()
    assert git_state(exported) == {"commit": NOT_A_CHECKOUT, "dirty": False}
    inner = committed_repo(tmp_path / "outer/nested-clone")
    assert inner != outer
    assert git_state(tmp_path / "outer/nested-clone") == {"commit": inner, "dirty": False}
    (tmp_path / "outer/file.txt").write_text("changed")
    assert git_state(tmp_path / "outer") == {"commit": outer, "dirty": True}
    assert git_state(tmp_path / "nowhere")["commit"] == NOT_A_CHECKOUT


def test_lower_hull_keeps_the_lowest_convex_points():
    x = np.array([0.0, 0.25, 0.5, 0.5, 0.75, 1.0, 0.6])
    y = np.array([0.0, -0.1, -0.4, -0.2, -0.1, 0.0, -0.25])
    # (0.75, -0.1) sits above the segment from (0.5, -0.4) to (1, 0); so does 0.25's point.
    assert hull.lower_hull_mask(x, y).tolist() == [True, False, True, False, False, True, False]


def test_binary_system_from_the_campaigns_hull_references():
    table = pd.DataFrame({"composition": ['{"Nb": 3, "Sn": 1}', '{"Nb": 1, "Sn": 2}', '{"Nb": 1, "Ge": 1}',
                                          '{"Nb": 6, "Sn": 5}'],
                          "e_form_per_atom": [-0.30, -0.25, -0.5, -0.10]})
    phases = hull.HullReferences(table).binary(("Nb", "Sn"))
    assert phases.formula.tolist() == ["Nb", "Nb3Sn", "Nb6Sn5", "NbSn2", "Sn"]  # Nb-Ge left out
    assert phases.on_hull.tolist() == [True, True, False, True, True]
    assert hull.binary_elements("Nb3Sn") == ("Nb", "Sn") and hull.binary_elements("Nb") is None


def test_steering_and_dft_tables_say_intervals_and_put_verified_first():
    steering = pd.DataFrame([{"source": "cfg", "baseline": "uncond", "validity": 0.7, "validity_lo": 0.65,
                              "validity_hi": 0.75, "valid_novel_in_domain": 150, "vni_frac_above_10K": 0.02,
                              "vni_frac_above_10K_lo": 0.007, "vni_frac_above_10K_hi": 0.055,
                              "vni_frac_above_10K_count": 3, "msun_above_10K_frac": 0.0, "msun_above_10K_frac_lo": 0.0,
                              "msun_above_10K_frac_hi": 0.14, "msun_above_10K_frac_count": 0,
                              "confirmed_above_10K_frac": 0.0, "confirmed_above_10K_frac_lo": 0.0,
                              "confirmed_above_10K_frac_hi": 0.14, "confirmed_above_10K_frac_count": 0,
                              "gain_vni_frac_above_10K": 6.4, "gain_vni_frac_above_10K_lo": 0.33,
                              "gain_vni_frac_above_10K_hi": 123.0, "gain_msun_above_10K_frac": np.nan,
                              "gain_confirmed_above_10K_frac": np.nan, "valid_median_expected_tc": 0.3}])
    row = measured.steering_table_from(steering).iloc[0]
    assert row["P(Tc > 10 K) > 0.5"] == "2.0 % [0.7-5.5] (3)" and row["gain"] == "6.40x [0.33-123.00]"
    assert row["MSUN gain"] is None
    dft = pd.DataFrame({"dft_slot": [1, 0, -1], "formula": ["AlZn", "Cd", "Nb"], "source": ["a", "b", "c"],
                        "id": ["1", "2", "3"], "dft_status": ["success", "failed", "skipped"],
                        "dft_energy_per_atom": [-3.1, np.nan, np.nan], "dft_seconds": [300.0, 60.0, np.nan]})
    table = measured.dft_table(dft)
    assert table.formula.tolist() == ["AlZn", "Cd"] and table.minutes.tolist() == pytest.approx([5.0, 1.0])


def test_candidate_figures_read_the_same_in_the_csv_and_the_hull_context(tmp_path):
    """A figure rounded twice reads two ways: 0.0504999 eV/atom is 0.050 at three digits
    but 0.0505 (so 0.051) once the CSV has rounded it to four."""
    from onnes.report.build import printed_candidates
    from onnes.report.collect import printable

    table = pd.DataFrame({"e_above_hull": [0.0504999, 0.1234449, 0.0], "decomposition": ["Ge + Pt", "Nb + Sn", "Nb"],
                          "mlip": "chgnet", "confirm_e_above_hull": [0.0834999, np.nan, 0.0014999],
                          "confirm_decomposition": ["Ge + Pt", None, "Nb"], "confirm_mlip": "sevennet-0"})
    printed = printed_candidates(table)
    printable(printed, list(printed.columns)).to_csv(tmp_path / "candidates.csv", index=False)
    for _, row in pd.read_csv(tmp_path / "candidates.csv").iterrows():
        assert row.hull_context.startswith(f"{row.e_above_hull:+.3f} eV/atom, decomposes to {row.decomposition} ")
        if pd.notna(row.confirm_e_above_hull):
            assert f"; {row.confirm_e_above_hull:+.3f}, to " in row.hull_context

