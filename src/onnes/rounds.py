"""Rounds of a campaign (``loop``): the model entries each later round adds.

Round 0 is the campaign as configured. Round k of a looping model m is the entry
``m-r{k}``: a reward fine-tune (RAFT-style self-training, Dong et al. 2023; the flywheel
of reward-weighted rounds that OMatGRPO and Crystalite's self-training report) whose
source is round k-1's weights and whose rewarded samples are round k-1's screened,
confirmed samples. Generating entries, not a new kind of job, lets every round reuse the
whole funnel (screening, confirmation, Tc, DFT) and keeps each round's paths its own, so
a finished round is never recomputed when ``loop.rounds`` grows: round k's entry depends
only on m's entry and ``loop``'s reward and train settings, never on the round count.

Imports nothing of the package but its errors, so that :mod:`onnes.config` can expand a
config with it.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from onnes.errors import ConfigError

ROUND_NAME = re.compile(r"^(?P<base>.+)-r(?P<round>[1-9][0-9]*)$")

# A looping model's keys a round does not copy: the loop sets its links and training, and
# a reward fine-tune takes conditioning and adapters from its source's checkpoint.
_NOT_COPIED = ("reward", "weights_from", "adapter", "conditioning", "train", "sample")


def round_name(model: str, k: int) -> str:
    """The generated entry of round ``k`` >= 1 of ``model``; round 0 is ``model`` itself."""
    return model if k == 0 else f"{model}-r{k}"


def round_of_dir(rnd: str) -> int:
    """The round a DFT stage's directory part names: "" is round 0, "rounds/{k}/" round k."""
    return int(re.search(r"\d+", rnd).group()) if rnd else 0


def round_models(loop: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Every generated entry -> (looping model, round), in round order."""
    return {round_name(m, k): (m, k) for k in range(1, loop["rounds"]) for m in loop["models"]}


def _round_entry(models: dict[str, Any], loop: dict[str, Any], model: str, k: int) -> dict[str, Any]:
    base = models[model]
    previous = round_name(model, k - 1)
    # Round 1 fine-tunes the weights m samples (its own, or its weights_from) on m's samples.
    source = (base["weights_from"] or model) if k == 1 else previous
    entry = {key: copy.deepcopy(value) for key, value in base.items() if key not in _NOT_COPIED}
    entry["reward"] = {**copy.deepcopy(loop["reward"]), "source": source, "samples": previous}
    # training as the weights were trained (a weights_from model has no training of its own)
    trained = models[base["weights_from"] or model]["train"]
    entry["train"] = {**copy.deepcopy(trained), **copy.deepcopy(loop["train"])}
    entry["sample"] = {key: copy.deepcopy(value) for key, value in base["sample"].items()
                       if key not in ("target", "guidance")}
    return entry


def expand_rounds(config: dict[str, Any], fill, train_keys: set[str]) -> list[str]:
    """Add round k >= 1's entries of every looping model to ``config['models']`` (and to
    ``active_models`` when it is set), each filled by ``fill`` (the schema's defaults for
    one model entry); return their names. ``train_keys``: the keys ``loop.train`` may
    set. Idempotent: an entry already there must be the one the loop generates."""
    loop = config["loop"]
    models = config["models"]
    unknown = sorted(set(loop["train"]) - train_keys)
    if unknown:
        raise ConfigError(f"unknown config key 'loop.train.{unknown[0]}'; allowed here: {', '.join(sorted(train_keys))}")
    if loop["rounds"] == 1:  # the campaign without a loop: loop.models play no part
        return []
    for name in loop["models"]:
        if name not in models:
            raise ConfigError(f"config key 'loop.models': '{name}' is not defined under 'models'"
                              f" (defined: {', '.join(sorted(models))})")
        if models[name]["sample"]["target"] is not None:
            raise ConfigError(f"config key 'loop.models': '{name}' samples with a target; a round learns from "
                              "unguided samples (loop a model sampling the same weights without one)")
        if ROUND_NAME.match(name) and ROUND_NAME.match(name)["base"] in loop["models"]:
            raise ConfigError(f"config key 'loop.models': '{name}' is a round of another looping model")
    if not loop["models"]:
        raise ConfigError("config key 'loop.rounds': more than one round needs loop.models")
    generated = round_models(loop)
    for name, (model, k) in generated.items():
        entry = fill(_round_entry(models, loop, model, k))
        if name in models and models[name] != entry:
            raise ConfigError(f"config key 'models.{name}': the name of round {k} of looping model '{model}'; "
                              "rename this entry")
        models[name] = entry
    active = config["active_models"]
    if active is not None:
        for name in loop["models"]:
            if name not in active:
                raise ConfigError(f"config key 'loop.models': '{name}' is not among active_models; "
                                  "round 0 is its campaign")
        config["active_models"] = [*active, *(name for name in generated if name not in active)]
    return list(generated)
