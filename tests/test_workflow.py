"""The workflow itself: lint, formatting, DAG, and the demo data stage on the real mirror."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO

from onnes import crystals
from onnes.config import validate
from onnes.data.curate import curate

pytestmark = pytest.mark.workflow


def snakemake(*args, cwd=REPO, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args],
        cwd=cwd, capture_output=True, text=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def test_lint_is_clean(tmp_path):
    assert "Congratulations" in snakemake("--lint", "-d", str(tmp_path)).stdout + snakemake(
        "--lint", "-d", str(tmp_path)).stderr


def test_snakefmt_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "."], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dry_run_shows_the_campaign_dag(tmp_path):
    out = snakemake("-n", "-d", str(tmp_path))
    text = out.stdout + out.stderr
    for rule in ("fetch_raw_file", "curate_dataset", "split_dataset", "curation_summary", "train_model",
                 "sample_shard", "gather_samples", "screen_match", "relax_shard", "hull_references",
                 "screen_finish", "screen_metrics", "sample_csp", "sample_baseline", "screen_summary"):
        assert rule in text


def test_a_config_typo_fails_naming_the_key(tmp_path):
    result = snakemake("-n", "-d", str(tmp_path), "--config", "campain=x", check=False)
    assert result.returncode != 0
    assert "unknown config key 'campain'" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, mirror):
    workdir = tmp_path_factory.mktemp("demo")
    snakemake("--cores", "2", "-d", str(workdir), "--configfile", str(REPO / "config/demo.yaml"),
              "--config", f"data_mirror={mirror}")
    return workdir


@pytest.mark.mirror
def test_demo_data_stage_end_to_end(demo_run):
    data = demo_run / "results/demo/data"
    summary = json.loads((data / "curation.json").read_text())
    assert set(summary["datasets"]) == {"mp20", "3dsc", "supercon"}
    for report in summary["datasets"].values():
        assert report["records_in"] == report["kept"] + report["dropped_total"]
        assert report["kept"] > 0
    assert summary["datasets"]["3dsc"]["dropped"]["partial_occupancy"] > 0
    assert summary["datasets"]["3dsc"]["tc"]["labelled"] > 0
    for dataset in ("mp20", "3dsc"):
        parts = {s: crystals.read_table(data / dataset / f"{s}.parquet") for s in ("train", "val", "test")}
        assert sum(len(p) for p in parts.values()) == summary["datasets"][dataset]["kept"]
        assert not set(parts["train"].id) & set(parts["test"].id)
        structures = crystals.to_structures(parts["val"])
        assert all(len(s) <= 40 for s in structures)
        assert len(crystals.to_atoms_list(parts["val"])) == len(parts["val"])
    # The raw files came from the mirror, checksummed.
    log = (demo_run / "resources/data/logs/mp20/pilot_train.csv.gz.log").read_text()
    assert "copied from mirror, sha256 ok" in log


DEMO_MODELS = ["flow", "diffusion", "interpolant", "flow-tc-cfg", "flow-tc-uncond", "flow-tc-adapter"]


@pytest.mark.mirror
@pytest.mark.parametrize("model", ["flow", "diffusion", "interpolant"])
def test_demo_trains_samples_and_screens_every_family(demo_run, model):
    results = demo_run / "results/demo"
    metrics = pd.read_csv(results / f"models/{model}/metrics.csv")
    assert metrics.step.iloc[-1] == 5000 and metrics.val_loss.notna().any()
    assert metrics.loss.iloc[-1] < metrics.loss.iloc[0]  # it learned something
    samples = crystals.read_table(results / f"samples/{model}/samples.parquet")
    assert len(samples) == 1000 and samples.id.is_unique
    summary = json.loads((results / f"samples/{model}/summary.json").read_text())
    # The README reports the measured figure (>= 80 %); this guards against regressions.
    assert summary["valid_struct_fraction"] >= 0.7
    assert len(list((results / f"samples/{model}/shards").glob("*.parquet"))) == 2
    check_screening(results, model)


def check_screening(results, source):
    """The funnel of one model or baseline: every step counted, 32 novel structures
    relaxed (the demo's cap), hull energies for every relaxed one, metrics written."""
    funnel = json.loads((results / f"screen/{source}/funnel.json").read_text())
    assert list(funnel["steps"]) == ["generated", "valid", "unique", "novel", "relaxed", "sun"]
    steps = funnel["steps"]
    assert steps["generated"] == 1000 >= steps["valid"] >= steps["unique"] >= steps["novel"] >= steps["relaxed"]
    assert steps["relaxed"] == min(32, steps["novel"]) > 0 and steps["sun"] <= steps["relaxed"]
    assert funnel["stability"]["sun_rate"] == steps["sun"] / 1000
    screened = crystals.read_table(results / f"screen/{source}/screened.parquet")
    assert len(screened) == 1000
    assert {"valid_struct", "valid_comp", "unique", "novel", "energy_chgnet", "e_above_hull", "sun"} <= set(screened)
    relaxed = screened[screened.relaxed]
    assert relaxed.e_above_hull.notna().all() and (relaxed.hull_status == "ok").all()
    metrics = json.loads((results / f"screen/{source}/metrics.json").read_text())
    assert 0 <= metrics["cov_recall"] <= 1 and metrics["wdist_density"] >= 0


@pytest.mark.mirror
@pytest.mark.parametrize("baseline", ["pyxtal", "substitution"])
def test_demo_screens_both_baselines(demo_run, baseline):
    results = demo_run / "results/demo"
    check_screening(results, baseline)
    summary = pd.read_csv(results / "screen/summary.csv").set_index("source")
    assert list(summary.index) == [*DEMO_MODELS, "pyxtal", "substitution"]
    assert summary.loc[DEMO_MODELS, "csp_match_rate"].notna().all()


@pytest.mark.mirror
@pytest.mark.parametrize("model", ["flow-tc-cfg", "flow-tc-uncond", "flow-tc-adapter"])
def test_demo_steered_models_sample_and_screen(demo_run, model):
    results = demo_run / "results/demo"
    samples = crystals.read_table(results / f"samples/{model}/samples.parquet")
    assert len(samples) == 1000 and (samples.source == model).all()
    check_screening(results, model)
    if model == "flow-tc-uncond":  # samples the cfg model's weights; trains nothing
        assert not (results / f"models/{model}").exists()


@pytest.mark.mirror
def test_demo_tc_stage_end_to_end(demo_run):
    results = demo_run / "results/demo/tc"
    metrics = json.loads((results / "predictor/metrics.json").read_text())
    assert metrics["target"] == "tc_K" and metrics["shared_groups"] == 0
    assert metrics["r2"] > 0.5 and metrics["mae"] > 0  # demo slice; full-data figures in the README
    for source in [*DEMO_MODELS, "pyxtal", "substitution"]:
        predicted = crystals.read_table(results / f"{source}/predicted.parquet")
        valid = predicted.valid.astype(bool)
        assert predicted.tc_pred_mean[valid].notna().all() and predicted.tc_pred_mean[~valid].isna().all()
        ranked = crystals.read_table(results / f"{source}/ranked.parquet")
        assert len(ranked) == int(predicted.sun.sum())
        assert ranked.tc_acquisition.is_monotonic_decreasing and ranked.tc_rank.tolist() == list(range(1, len(ranked) + 1))
    steering = pd.read_csv(results / "steering.csv").set_index("source")
    assert steering.loc["flow-tc-cfg", "baseline"] == "flow-tc-uncond"
    assert steering.loc["flow-tc-adapter", "baseline"] == "flow"
    assert "training set (measured Tc)" in steering.index


@pytest.mark.mirror
def test_demo_dft_stage_end_to_end(demo_run):
    """CP2K single points on the demo's top 2 runnable candidates, through atomate2 and
    jobflow, gathered with every candidate passed over on the way."""
    table = crystals.read_table(demo_run / "results/demo/dft/dft.parquet")
    selected = table[table.dft_slot >= 0]
    assert selected.dft_slot.tolist() == [0, 1]
    assert set(table.dft_status) <= {"success", "failed", "unconverged", "skipped"}
    assert (table[table.dft_slot < 0].dft_error.str.len() > 0).all()
    done = selected[selected.dft_status == "success"]
    assert len(done) >= 1 and done.dft_energy.notna().all() and (done.dft_code == "cp2k").all()
    for _, row in done.iterrows():
        store = demo_run / f"results/demo/dft/{row.source}/{row.id}/store/docs.json"
        assert any(d.get("output", {}).get("state") == "successful" for d in json.loads(store.read_text()))


@pytest.mark.mirror
def test_demo_rerun_has_nothing_to_do(demo_run, mirror):
    result = snakemake("-n", "-d", str(demo_run), "--configfile", str(REPO / "config/demo.yaml"),
                       "--config", f"data_mirror={mirror}")
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.mirror
def test_full_curation_meets_the_campaign_floor(mirror, tmp_path):
    """The real data sets: >= 4,000 ordered 3DSC structures with Tc, >= 15,000 MP-20."""
    from onnes.data.fetch import fetch
    from onnes.data.sources import DATASET_FILES

    for dataset in ("3dsc", "mp20"):
        for path in DATASET_FILES[dataset]:
            fetch(path, tmp_path, mirror)
    data_config = validate({})["data"]
    sc = curate("3dsc", tmp_path, data_config, workers=2)
    assert sc.report["tc"]["labelled"] >= 4000
    assert sc.kept.tc_K.notna().sum() >= 4000
    mp20 = curate("mp20", tmp_path, data_config, workers=2)
    assert mp20.report["kept"] >= 15000
