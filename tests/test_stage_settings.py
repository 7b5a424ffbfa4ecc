"""Every rule's --settings comes from onnes.stage_settings, for every job of a dry run."""

import json
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO, user_campaign

from onnes import config as cfg
from onnes.graph import CampaignGraph
from onnes.stage_settings import SLICES, stage_settings


def dry_run_jobs(*args):
    """(rule, wildcards, parsed --settings or None) of every job a dry run prints."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p", *args],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        wildcards = {}
        found = re.search(r"^\s+wildcards: (.+)$", block, re.MULTILINE)
        if found:
            wildcards = dict(item.split("=", 1) for item in found.group(1).split(", "))
        settings = None
        command = next((line for line in block.splitlines() if "--settings " in line), None)
        if command:
            tokens = shlex.split(command.split(" > ")[0])
            settings = json.loads(tokens[tokens.index("--settings") + 1])
        jobs.append((head.group(1), wildcards, settings))
    return jobs


USER_RULES = {"import_dataset", "import_candidates"}  # only with data.custom and candidates
COMBINED_RULES = {"combine_datasets"}  # only when a trained model uses data.combined (config.yaml)


DISTILL_RULES = {"reflow_pairs"}  # only with a distilled model (models.<name>.distill)
# The demo with a reflow model of its flow: a second config file, which snakemake merges
# into the first (--config would pass the numbers as strings).
DISTILLED = ("models:\n  flow-reflow:\n    family: flow\n    distill: {source: flow, pairs: 8}\n"
             "active_models: [flow, flow-reflow]\n")


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/demo.yaml", "user", "distilled"])
def test_every_rule_settings_are_the_stage_slice(tmp_path, configfile):
    extra = ()
    if configfile == "user":  # the demo with a user data set and a user candidate source
        configfile = user_campaign(REPO / "config/demo.yaml", tmp_path)
    elif configfile == "distilled":
        (tmp_path / "distilled.yaml").write_text(DISTILLED)
        configfile, extra = "config/demo.yaml", (str(tmp_path / "distilled.yaml"),)
    jobs = dry_run_jobs("-d", str(tmp_path), "--configfile", str(REPO / configfile), *extra)
    # The report receives the whole validated config: the reference for every slice.
    (config,) = [settings for rule, _, settings in jobs if rule == "campaign_report"]
    assert config == cfg.validate(json.loads(json.dumps(config)))
    with_settings = {rule for rule, _, settings in jobs if settings is not None}
    graph = CampaignGraph(config)
    expected = set(SLICES) - (set() if config["candidates"] else USER_RULES) - (
        set() if graph.used_combined() else COMBINED_RULES) - (
        set() if any(graph.distill_source(m) for m in graph.active) else DISTILL_RULES)
    assert with_settings == expected, "a rule passes --settings without a slice, or a slice has no rule"
    for rule, wildcards, settings in jobs:
        if settings is not None:
            expected = json.loads(json.dumps(stage_settings(config, rule, **wildcards)))
            assert settings == expected, f"{rule} {wildcards}: settings differ from stage_settings"


def test_slices_pass_validation_and_keep_their_values(tmp_path):
    """A slice is a valid config on its own, and parsing it changes none of the values it
    carries (nothing is filled in: a stage reads what its rule passed)."""
    config = cfg.load(user_campaign(REPO / "config/demo.yaml", tmp_path),
                      {"data": {"combined": {"general": {"datasets": ["mp20", "mine"]}}},
                       "models": {"flow-reflow": {"family": "flow", "distill": {"source": "flow"}}}})
    wildcards = {"curate_dataset": {"dataset": "mp20"}, "split_dataset": {"dataset": "mine"},
                 "combine_datasets": {"dataset": "general"},
                 "train_model": {"model": "flow-tc-adapter"}, "sample_shard": {"model": "flow", "shard": "0"},
                 "sample_csp": {"model": "flow"}, "sample_baseline": {"model": "pyxtal"},
                 "import_dataset": {"dataset": "mine"}, "import_candidates": {"model": "collab"},
                 "reward_set": {"model": "flow-tc-reward"}, "reflow_pairs": {"model": "flow-reflow"}}

    def contained(part, whole):
        if isinstance(part, dict):
            return all(k in whole and contained(v, whole[k]) for k, v in part.items())
        return part == whole

    for rule in SLICES:
        subset = json.loads(json.dumps(stage_settings(config, rule, **wildcards.get(rule, {}))))
        parsed = cfg.parse_settings(json.dumps(subset))
        assert parsed == subset, rule
        assert contained(subset, json.loads(json.dumps(config))), rule


def test_every_models_slice_passes_its_own_checks(tmp_path):
    """A model's slice carries the models it refers to, and theirs in turn: an unguided
    twin of a fine-tune (weights_from -> adapter.base) and a reward fine-tune (source,
    samples) validate on their own, as the jobs do."""
    config = cfg.load(user_campaign(REPO / "config/demo.yaml", tmp_path))
    for model in config["models"]:
        for rule in ("train_model", "sample_shard", "reward_set"):
            subset = stage_settings(config, rule, model=model)
            cfg.parse_settings(json.dumps(subset))  # raises ConfigError on a missing reference
    twin = stage_settings(config, "sample_shard", model="flow-tc-uncond")
    assert set(twin["models"]) == {"flow-tc-uncond", "flow-tc-cfg", "flow"}
