"""Config: defaults from the schema, unknown keys and wrong types fail naming the key."""

import json
import pickle
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate as snakemake_validate

from onnes import config as cfg
from onnes.graph import CampaignGraph

REPO = Path(__file__).resolve().parents[1]


def test_defaults_fill_an_empty_config():
    config = cfg.validate({})
    assert config["campaign"] == "default"
    assert config["data_mirror"] is None
    assert config["data"]["per_dataset"]["mp20"]["max_atoms"] == 20
    assert config["data"]["per_dataset"]["3dsc"]["split_by"] == "formula"
    assert config["data"]["dedup"] == {"enabled": True, "ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}


def test_partial_dataset_settings_keep_other_defaults():
    config = cfg.validate({"data": {"per_dataset": {"mp20": {"max_atoms": 30}}}})
    assert config["data"]["per_dataset"]["mp20"] == {"max_atoms": 30, "split_by": "structure", "max_records": None}
    assert config["data"]["per_dataset"]["wbm"]["max_atoms"] == 52


@pytest.mark.parametrize(
    "config, named",
    [
        ({"campain": "x"}, "'campain'"),
        ({"data": {"per_dataset": {"mp20": {"max_atom": 3}}}}, "'data.per_dataset.mp20.max_atom'"),
        ({"data": {"dedupe": {}}}, "'data.dedupe'"),
        ({"seed": "abc"}, "'seed'"),
        ({"data": {"per_dataset": {"mp20": {"max_atoms": 0}}}}, "'data.per_dataset.mp20.max_atoms'"),
        ({"data": {"datasets": ["mp21"]}}, "'data.datasets.0'"),
        ({"data": {"allowed_elements": ["Fe", "Xx"]}}, "'data.allowed_elements'"),
        ({"data": {"split": {"train": 0.9, "val": 0.1, "test": 0.1}}}, "'data.split'"),
        ({"campaign": "a b/c"}, "'campaign'"),
        ({"active_models": ["nosuch"]}, "'active_models': 'nosuch'"),
    ],
)
def test_bad_config_names_the_key(config, named):
    with pytest.raises(cfg.ConfigError, match=named.replace(".", r"\.")):
        cfg.validate(config)


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml", "gpu.yaml", "quality.yaml"])
def test_presets_are_valid_for_onnes_and_snakemake(name):
    config = cfg.load(REPO / "config" / name)
    raw = yaml.safe_load((REPO / "config" / name).read_text())
    snakemake_validate(raw, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    assert config["campaign"] == raw["campaign"]


def test_snakemake_validation_fills_the_same_defaults():
    from_snakemake: dict = {}
    snakemake_validate(from_snakemake, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    assert from_snakemake == cfg.validate({})


def test_workflow_schema_is_the_packaged_schema():
    assert (REPO / "workflow/schemas/config.schema.yaml").read_text() == cfg.schema_path().read_text()


def test_settings_json_is_validated():
    assert cfg.parse_settings('{"seed": 3}')["seed"] == 3
    with pytest.raises(cfg.ConfigError, match="not valid JSON"):
        cfg.parse_settings("{seed: 3")
    with pytest.raises(cfg.ConfigError, match="'sed'"):
        cfg.parse_settings('{"sed": 3}')


def test_a_stage_reads_only_the_keys_its_slice_carries():
    """--settings is returned as given, not with the schema's defaults filled in: a stage
    reading a key its rule does not pass would change its result without a rerun."""
    settings = cfg.parse_settings(json.dumps({"seed": 1, "relax": cfg.validate({})["relax"]}))
    assert settings["relax"]["fmax"] == 0.1 and settings["relax"]["reject_later"][0]["after"] == 100
    for read in (lambda s: s["confirm"], lambda s: s["relax"]["no_such_key"]):
        with pytest.raises(cfg.ConfigError, match=r"--settings has no '(confirm|relax\.no_such_key)'"):
            read(settings)
    assert "confirm" not in settings
    # .get(key, default) is no way round it for a key the schema would fill ...
    for read in (lambda s: s.get("confirm", {}), lambda s: s.get("data")):
        with pytest.raises(cfg.ConfigError, match=r"--settings has no '(confirm|data)'"):
            read(settings)
    # ... while a key the schema leaves unset keeps dict semantics
    assert settings["relax"].get("no_such_key", 5) == 5
    model = cfg.parse_settings(json.dumps({"models": cfg.validate(
        {"models": {"m": {"family": "flow"}}})["models"]}))["models"]["m"]
    assert model.get("adapter")["base"] is None and model["processes"].get("lattice") is None
    with pytest.raises(cfg.ConfigError, match=r"'models\.m\.sample\.steps'"):
        cfg.parse_settings(json.dumps({"models": {"m": {"family": "flow", "sample": {}}}}))["models"]["m"][
            "sample"].get("steps", 10)
    assert json.loads(json.dumps(settings))["seed"] == 1
    assert yaml.safe_load(yaml.safe_dump(settings)) == settings  # the report writes the config as YAML
    copied = pickle.loads(pickle.dumps(settings))  # worker processes get it pickled
    with pytest.raises(cfg.ConfigError, match="'relax.no_such_key'"):
        copied["relax"]["no_such_key"]
    with pytest.raises(cfg.ConfigError, match="fmax"):  # still validated as a config
        cfg.parse_settings('{"relax": {"fmax": "loose"}}')


def test_allowed_elements_default_is_h_to_pu():
    allowed = cfg.allowed_elements(cfg.validate({})["data"])
    assert {"H", "Cu", "Pu"} <= allowed and "Am" not in allowed
    assert "O" not in cfg.allowed_elements({"allowed_elements": None, "excluded_elements": ["O"]})


@pytest.mark.parametrize("overlay", ["steering.yaml", "steering-union.yaml"])
def test_steering_overlays_are_valid_on_top_of_the_demo(overlay):
    """As Snakemake merges them: config.yaml, then demo.yaml, then the overlay."""
    merged = {}
    for name in ("config.yaml", "demo.yaml", overlay):
        merged = cfg.deep_merge(merged, yaml.safe_load((REPO / "config" / name).read_text()))
    config = cfg.validate(merged)
    assert config["active_models"][:2] == ["flow-tc-cfg", "flow-tc-uncond"]
    assert config["models"]["flow-tc-uncond"]["sample"]["num_samples"] == 2000
    assert CampaignGraph(config).used_combined() == (["general"] if overlay == "steering-union.yaml" else [])


def test_few_step_overlay_is_valid_on_top_of_the_quality_preset():
    """config/few_step.yaml: diffusion, KLDM and flow at their presets' evaluations (1,000,
    1,000, 100) and at 16, sampled from the same weights, no retraining for the
    16-evaluation sources; and flow reflowed, at 16."""
    merged = {}
    for name in ("config.yaml", "quality.yaml", "few_step.yaml"):
        merged = cfg.deep_merge(merged, yaml.safe_load((REPO / "config" / name).read_text()))
    config = cfg.validate(merged)
    assert config["active_models"] == ["diffusion", "kldm", "flow", "diffusion-16", "kldm-16", "flow-16",
                                       "flow-reflow"]
    assert config["active_baselines"] == []
    for model in ("diffusion-16", "kldm-16", "flow-16"):
        assert config["models"][model]["weights_from"] == model.removesuffix("-16")
        assert config["models"][model]["sample"]["steps"] == 16
    # flow distilled by reflow, sampled at 16 steps
    reflowed = config["models"]["flow-reflow"]
    assert reflowed["distill"]["source"] == "flow" and reflowed["sample"]["steps"] == 16
    assert CampaignGraph(config).base_of("flow-reflow") == "flow"
