"""Each job's slice of the campaign config: the one place a rule's ``--settings`` is built.

A rule passes its job only the keys that job's stage reads, so Snakemake reruns a job
when, and only when, one of them changes (a new metric count does not rerun the
relaxations). ``rules/common.smk`` calls :func:`settings_argument` for every rule with
``--settings``; the CLI fills the schema's defaults back in (``config.parse_settings``),
and ``tests/test_stage_settings.py`` checks every rule's settings of a dry run against
:func:`stage_settings`.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Callable

from onnes.graph import CampaignGraph
from onnes.rounds import round_of_dir

Config = dict[str, Any]

# Screening keys each screening rule reads (relaxation reads the whole relax block).
_MATCH_KEYS = ("min_distance", "min_volume", "oxidation_states", "matcher")
# Relaxation keys the funnel's protocol block states (and whether a confirmation ran).
_PROTOCOL_RELAX_KEYS = ("select", "calculator", "fmax", "max_steps", "relax_cell", "max_structures")
_PROTOCOL_CONFIRM_KEYS = ("calculator", "fmax", "max_steps", "max_structures", "relax_cell")


# data keys that name data sets and their own settings, not curation's checks
_DATA_SET_KEYS = ("datasets", "per_dataset", "split", "custom", "combined")


def _curate(config: Config, dataset: str) -> Config:
    data = config["data"]
    subset = {k: v for k, v in data.items() if k not in _DATA_SET_KEYS}
    subset["per_dataset"] = {dataset: data["per_dataset"][dataset]}
    return {"data": subset}


def _split(config: Config, dataset: str) -> Config:
    data = config["data"]
    group = next((g for g in ("custom", "combined") if dataset in data[g]), "per_dataset")
    return {"seed": config["seed"], "data": {"split": data["split"], group: {dataset: data[group][dataset]}}}


def _import(config: Config, group: str, name: str) -> Config:
    """Curation's checks and dedup plus the one user entry (data.custom or candidates)."""
    data = config["data"]
    checks = {k: v for k, v in data.items() if k not in _DATA_SET_KEYS}
    if group == "custom":
        return {"data": {**checks, "custom": {name: data["custom"][name]}}}
    return {"data": checks, "candidates": {name: config["candidates"][name]}}


def _combine(config: Config, dataset: str) -> Config:
    data = config["data"]
    return {"data": {"dedup": data["dedup"], "combined": {dataset: data["combined"][dataset]}}}


def _model(config: Config, model: str) -> Config:
    return {"seed": config["seed"], "models": CampaignGraph(config).linked_entries(model)}


def _train(config: Config, model: str) -> Config:
    """A model's entries without their sampling blocks: more samples, or another
    sampler, must not retrain a model (sampling reads its own slice, which overrides
    the sampling settings a checkpoint stores)."""
    entries = CampaignGraph(config).linked_entries(model)
    return {"seed": config["seed"],
            "models": {name: {k: v for k, v in entry.items() if k != "sample"} for name, entry in entries.items()}}


def _reflow_pairs(config: Config, model: str) -> Config:
    """What a distilled model's pairs depend on: its distill block (architecture and
    family, read to check them) and its teacher's whole entry, sampling included; not
    the distilled model's own training or sampling settings."""
    entry = config["models"][model]
    source = entry["distill"]["source"]
    own = {k: v for k, v in entry.items() if k not in ("sample", "train")}
    return {"seed": config["seed"], "models": {model: own, source: config["models"][source]}}


def _csp(config: Config, model: str) -> Config:
    return {**_model(config, model), "screen": {"metrics": config["screen"]["metrics"]}}


def _baseline(config: Config, model: str) -> Config:
    return {"seed": config["seed"], "data": config["data"],
            "baselines": {model: config["baselines"][model]}}


def _screen(screen_keys: tuple[str, ...] = (), relax_keys: tuple[str, ...] | None = ()):
    def subset(config: Config, **_: str) -> Config:
        relax = config["relax"] if relax_keys is None else {k: config["relax"][k] for k in relax_keys}
        return {"seed": config["seed"], "screen": {k: config["screen"][k] for k in screen_keys}, "relax": relax}

    return subset


def _block(*path: str, seed: bool = False):
    """The config under ``path`` (e.g. tc.rank), nested as in the config."""

    def subset(config: Config, **_: str) -> Config:
        value: Any = config
        for key in path:
            value = value[key]
        for key in reversed(path):
            value = {key: value}
        return {"seed": config["seed"], **value} if seed else value

    return subset


def _dft_select(config: Config, rnd: str) -> Config:
    """The DFT block, with top_k of the round whose DFT stage this is (``rnd``: "" for
    round 0, "rounds/{k}/" after): the slot count is the only setting a round changes."""
    return {"dft": {**config["dft"], "top_k": CampaignGraph(config).round_dft_top_k(round_of_dir(rnd))}}


SLICES: dict[str, Callable[..., Config]] = {
    "curate_dataset": lambda c, dataset: _curate(c, dataset),
    "split_dataset": lambda c, dataset: _split(c, dataset),
    "import_dataset": lambda c, dataset: _import(c, "custom", dataset),
    "combine_datasets": lambda c, dataset: _combine(c, dataset),
    "import_candidates": lambda c, model: _import(c, "candidates", model),
    "train_model": lambda c, model: _train(c, model),
    "sample_shard": lambda c, model, shard=None: _model(c, model),
    "sample_csp": lambda c, model: _csp(c, model),
    "reflow_pairs": lambda c, model: _reflow_pairs(c, model),
    "sample_baseline": lambda c, model: _baseline(c, model),
    "screen_match": _screen(_MATCH_KEYS),
    "relax_shard": _screen(relax_keys=None),
    "screen_stability": _screen(("stable_threshold", "matcher"), ("select", "calculator")),
    "confirm_candidates": _block("confirm"),
    "screen_finish": lambda c, **_: {**_screen(("stable_threshold", "matcher"), _PROTOCOL_RELAX_KEYS)(c),
                                     "confirm": {k: c["confirm"][k] for k in _PROTOCOL_CONFIRM_KEYS}},
    "reference_fingerprints": _screen(("metrics",)),
    "screen_metrics": _screen(("metrics",)),
    "tc_predictor": _block("tc", "predictor", seed=True),
    "tc_rank": _block("tc", "rank"),
    "tc_compare": _block("tc", "steering"),
    "reward_set": lambda c, model: _model(c, model),
    "dft_select": lambda c, rnd="": _dft_select(c, rnd),
    "dft_run": _block("dft"),
    "campaign_report": lambda c: c,
}


def stage_settings(config: Config, rule: str, **wildcards: str) -> Config:
    """The config subset the job of ``rule`` (with these wildcards) receives."""
    try:
        build = SLICES[rule]
    except KeyError:
        raise KeyError(f"no settings are defined for rule '{rule}' (known: {', '.join(sorted(SLICES))})") from None
    return build(config, **wildcards)


def settings_argument(config: Config, rule: str, **wildcards: str) -> str:
    """:func:`stage_settings` as the shell-quoted JSON of a ``--settings`` argument."""
    return shlex.quote(json.dumps(stage_settings(config, rule, **wildcards), sort_keys=True))
