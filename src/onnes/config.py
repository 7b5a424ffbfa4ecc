"""Campaign configuration: load, fill defaults from the JSON schema, validate.

The schema (``onnes/schemas/config.schema.yaml``, linked from
``workflow/schemas/``) is the single source of defaults. The Snakefile and every stage
run without Snakemake validate with this module: the schema (the same defaults
``snakemake.utils.validate`` fills, a test checks), then the checks a schema cannot
express (element symbols, split sums, links between models, sampling plans).
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pymatgen.core.periodic_table import Element

from onnes.catalogue import DATASET_FILES
from onnes.elements import MAX_Z
from onnes.errors import ConfigError  # noqa: F401  (defined in the bottom layer; stages import it from here too)
from onnes.graph import CampaignGraph
from onnes.rounds import expand_rounds


def schema_path() -> Path:
    return Path(str(resources.files("onnes") / "schemas" / "config.schema.yaml"))


# libyaml's parser when PyYAML has it: every Snakemake process (one per cluster job and
# its job step) reads the 800-line schema, ten times faster than the pure-Python loader.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_schema() -> dict:
    return yaml.load(schema_path().read_text(), Loader=YAML_LOADER)


def _validator_with_defaults():
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": properties_with_defaults})


def _describe(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"'{path + '.' if path else ''}{k}'" for k in unknown)
        return f"unknown config key {keys}; allowed here: {', '.join(allowed)}"
    return f"config key '{path or '<top level>'}': {error.message}"


def _fill_and_check(instance: dict[str, Any], schema: dict) -> dict[str, Any]:
    """Fill ``schema``'s defaults into ``instance`` (in place); raise ConfigError naming
    the first offending key."""
    validator = _validator_with_defaults()(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_describe(errors[0]))
    return instance


def validate(config: dict[str, Any], whole: bool = True, samplers: bool = True) -> dict[str, Any]:
    """Fill defaults into ``config`` (in place), add the model entries of later rounds
    (``loop``, :mod:`onnes.rounds`) and validate it; return it.

    ``whole=False`` for a stage's slice (``--settings``): the checks across sections
    that a slice leaves out (a model's data set among the campaign's) are skipped; the
    workflow ran them on the whole config. Every model's sampling settings must make a
    ``SamplingPlan``; ``samplers=False`` skips building its processes to check that they
    can take the plan's steps (it imports torch): the Snakefile passes it
    when a cluster job re-reads the workflow, which the main process has checked.
    Raises ConfigError naming the first offending key.
    """
    schema = load_schema()
    _fill_and_check(config, schema)
    # later rounds' model entries (a stage's slice gets the default loop: one round, none added)
    train_keys = set(schema["$defs"]["model"]["properties"]["train"]["properties"])
    expand_rounds(config, fill_model_defaults, train_keys)
    check_semantics(config, whole, samplers)
    return config


def fill_model_defaults(entry: dict[str, Any]) -> dict[str, Any]:
    """Fill the schema's defaults into one model entry (in place) and validate it; for
    settings stored in a checkpoint written before a key existed."""
    schema = load_schema()
    return _fill_and_check(entry, {**schema["$defs"]["model"], "$defs": schema["$defs"]})


def check_semantics(config: dict[str, Any], whole: bool = True, samplers: bool = True) -> None:
    """Checks the JSON schema cannot express (``whole``: and those across sections)."""
    data = config["data"]
    for key in ("allowed_elements", "excluded_elements"):
        for symbol in data.get(key) or []:
            if not Element.is_valid_symbol(symbol):
                raise ConfigError(f"config key 'data.{key}': unknown element symbol '{symbol}'")
    split = data["split"]
    total = split["train"] + split["val"] + split["test"]
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"config key 'data.split': train + val + test must be 1, got {total:g}")
    # (active_baselines needs no check here: the schema's enum names the baselines.)
    for name in config["active_models"] or []:
        if name not in config["models"]:
            raise ConfigError(f"config key 'active_models': '{name}' is not defined under 'models'"
                              f" (defined: {', '.join(sorted(config['models']))})")
    for name in config["active_baselines"]:
        dataset = config["baselines"][name]["dataset"]
        if dataset not in data["datasets"]:
            raise ConfigError(f"config key 'baselines.{name}.dataset': '{dataset}' is not in data.datasets")
    if whole:
        _check_combined(config)
        _check_user_structures(config)
    models = config["models"]
    for name, entry in models.items():
        references = CampaignGraph.references(entry).items()
        for key, other in references:
            if other is None:
                continue
            if other not in models or other == name:
                raise ConfigError(f"config key 'models.{name}.{key}': '{other}' is not another model under 'models'")
            if models[other]["weights_from"] is not None and key != "reward.samples":
                raise ConfigError(f"config key 'models.{name}.{key}': '{other}' has no weights of its own")
        if entry["adapter"]["base"] and not entry["conditioning"]["columns"]:
            raise ConfigError(f"config key 'models.{name}.adapter': adapters need conditioning.columns")
        _check_reward(config, name, entry, whole)
        _check_distill(config, name, entry, samplers)
        target = entry["sample"]["target"]
        if target is not None and len(target) != len(entry["conditioning"]["columns"]):
            raise ConfigError(f"config key 'models.{name}.sample.target': one value per conditioning column "
                              f"({entry['conditioning']['columns']})")
        for symbol in entry["sample"]["elements"] or []:
            if not Element.is_valid_symbol(symbol):
                raise ConfigError(f"config key 'models.{name}.sample.elements': unknown element symbol '{symbol}'")
        _check_sampler(name, entry, samplers and not any(other for _, other in references))
    _check_calculators(config)
    for dataset in config["screen"]["hull_datasets"] or []:
        if dataset not in data["datasets"]:
            raise ConfigError(f"config key 'screen.hull_datasets': '{dataset}' is not in data.datasets")
    for symbol in config["dft"]["exclude_elements"]:
        if not Element.is_valid_symbol(symbol):
            raise ConfigError(f"config key 'dft.exclude_elements': unknown element symbol '{symbol}'")
    store = config["dft"]["store"]
    if store["type"] == "mongo" and not store["uri"]:
        raise ConfigError("config key 'dft.store.uri': a mongo store needs a mongodb:// URI")


def _check_calculators(config: dict[str, Any]) -> None:
    """The relaxing and confirming MLIPs must be registered (built in, or an entry point)."""
    from onnes.mlip import mlip_names

    for key in ("relax", "confirm"):
        name = config[key]["calculator"]
        if name is not None and name not in mlip_names():
            raise ConfigError(f"config key '{key}.calculator': unknown MLIP '{name}' (known: {', '.join(mlip_names())})")


def _check_sampler(name: str, entry: dict[str, Any], processes: bool) -> None:
    """The sampling settings make a plan (no torch), and, with ``processes``, one the
    model's processes can take (it builds them: torch): caught before a campaign trains,
    not when it samples."""
    from onnes.models.families import SamplingPlan

    try:
        plan = SamplingPlan.of(entry["family"], entry["sample"])
        if processes:
            from onnes.models.model import build_processes
            from onnes.models.samplers import build_sampler

            build_sampler(plan, build_processes(entry, num_types=2))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config key 'models.{name}': {error}") from None


def _check_reward(config: dict[str, Any], name: str, entry: dict[str, Any], whole: bool) -> None:
    source = entry["reward"]["source"]
    if source is None:
        return
    key = f"config key 'models.{name}.reward'"
    models = config["models"]
    other = models[source]
    if entry["adapter"]["base"] or entry["weights_from"] or entry["conditioning"]["columns"]:
        raise ConfigError(f"{key}: a reward fine-tune takes its architecture and conditioning from its source "
                          "(no adapter.base, weights_from or conditioning.columns of its own)")
    if other["conditioning"]["columns"] and other["conditioning"]["p_uncond"] <= 0:
        raise ConfigError(f"{key}: source '{source}' is conditional without condition dropout (p_uncond 0): "
                          "it has no unconditional branch to fine-tune")
    if other["family"] != entry["family"]:
        raise ConfigError(f"{key}: source '{source}' is a {other['family']} model; this one says {entry['family']}")
    samples = entry["reward"]["samples"] or source
    if samples not in models or (models[samples]["weights_from"] or samples) != source:
        raise ConfigError(f"{key}.samples: '{samples}' is neither the source nor a model sampling its weights")
    if models[samples]["sample"]["target"] is not None:
        raise ConfigError(f"{key}.samples: '{samples}' samples with a target; the reward weighs unguided samples")
    if whole and name in (config["active_models"] or list(models)):  # what a run of this model needs
        if not config["tc"]["enabled"]:
            raise ConfigError(f"{key}: the reward is the Tc predictor's; tc.enabled is false")
        thresholds = config["tc"]["predictor"]["thresholds"]
        if entry["reward"]["threshold"] not in thresholds:
            raise ConfigError(f"{key}.threshold: {entry['reward']['threshold']:g} K has no classifier; "
                              f"tc.predictor.thresholds are {thresholds}")
        if samples not in (config["active_models"] or list(models)):
            raise ConfigError(f"{key}.samples: '{samples}' is not among active_models; its samples are needed")


def _check_distill(config: dict[str, Any], name: str, entry: dict[str, Any], processes: bool) -> None:
    """A distilled model (distill.source) starts from its teacher's weights and trains on
    paths from the teacher's prior draws: same family, no conditioning or other links of
    its own, a teacher sampled by its ODE, and (``processes``, torch) processes that
    take a paired base point."""
    source = entry["distill"]["source"]
    if source is None:
        return
    key = f"config key 'models.{name}.distill'"
    teacher = config["models"][source]
    if entry["adapter"]["base"] or entry["weights_from"] or entry["reward"]["source"] \
            or entry["conditioning"]["columns"]:
        raise ConfigError(f"{key}: a distilled model takes its architecture from its source (no adapter.base, "
                          "weights_from, reward.source or conditioning.columns of its own)")
    if teacher["family"] != entry["family"]:
        raise ConfigError(f"{key}: source '{source}' is a {teacher['family']} model; this one says {entry['family']}")
    if teacher["conditioning"]["columns"] or teacher["adapter"]["base"] or teacher["reward"]["source"]:
        raise ConfigError(f"{key}: source '{source}' must be an unconditional model trained on data")
    from onnes.models.families import SamplingPlan

    if SamplingPlan.of(teacher["family"], teacher["sample"]).sampler != "ode":
        raise ConfigError(f"{key}: reflow pairs come from the source's ODE; set models.{source}.sample.sampler: ode")
    if processes:
        from onnes.models.model import build_processes, uncoupled_phrase

        phrase = uncoupled_phrase(build_processes(teacher, num_types=2))
        if phrase:
            raise ConfigError(f"{key}: the {teacher['family']} family's {phrase}; reflow needs the flow "
                              "family's processes")


def dataset_settings(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A data set's own settings: ``data.per_dataset.<name>``, ``data.custom.<name>`` or
    ``data.combined.<name>``."""
    for group in ("custom", "combined"):
        if group in data and name in data[group]:  # a stage's slice carries only the set's own group
            return data[group][name]
    try:
        return data["per_dataset"][name]
    except KeyError:
        raise ConfigError(f"no data set '{name}' in data.per_dataset, data.custom or data.combined") from None


def _check_combined(config: dict[str, Any]) -> None:
    """A combined data set has a name of its own; one the run builds is made of structure
    sets the campaign curates or imports (not of other combined sets)."""
    data = config["data"]
    graph = CampaignGraph(config)
    members_allowed = [d for d in graph.structure_datasets() if d not in data["combined"]]
    used = graph.used_combined()
    for name, entry in data["combined"].items():
        key = f"config key 'data.combined.{name}"
        if name in DATASET_FILES or name in data["custom"]:
            raise ConfigError(f"{key}': '{name}' is already a data set's name")
        for member in entry["datasets"] if name in used else []:
            if member not in members_allowed:
                raise ConfigError(f"{key}.datasets': '{member}' is neither a structure data set in data.datasets "
                                  f"nor one under data.custom (have: {', '.join(members_allowed)})")


def _check_user_structures(config: dict[str, Any]) -> None:
    """Names of the user's data sets and candidate sources, and the data sets they refer to."""
    custom, candidates = config["data"]["custom"], config["candidates"]
    for name in custom:
        if name in DATASET_FILES:
            raise ConfigError(f"config key 'data.custom.{name}': '{name}' is a built-in data set's name")
    graph = CampaignGraph(config)
    usable = graph.structure_datasets()
    models = config["models"]
    for name in sorted(graph.trained_models()):
        entry = models[name]
        if entry["dataset"] not in usable:
            raise ConfigError(f"config key 'models.{name}.dataset': '{entry['dataset']}' is neither a structure "
                              f"data set in data.datasets nor one under data.custom or data.combined "
                              f"(have: {', '.join(usable)})")
    taken = set(config["models"]) | set(config["baselines"]) | set(custom) | set(config["data"]["combined"])
    for name, entry in candidates.items():
        if name in taken:
            raise ConfigError(f"config key 'candidates.{name}': the name is taken by a model, baseline or data set")
        if entry["dataset"] not in usable:
            raise ConfigError(f"config key 'candidates.{name}.dataset': '{entry['dataset']}' is neither a structure "
                              f"data set in data.datasets nor one under data.custom (have: {', '.join(usable)})")


def load(path: str | Path | None = None, overrides: dict | None = None) -> dict[str, Any]:
    """Read a YAML config file (or start empty), deep-merge overrides, validate."""
    config: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        config = yaml.load(text, Loader=YAML_LOADER) or {}
        if not isinstance(config, dict):
            raise ConfigError(f"{path}: the config must be a mapping, got {type(config).__name__}")
    if overrides:
        config = deep_merge(config, overrides)
    return validate(config)


def deep_merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class StageSlice(dict):
    """A stage's ``--settings``: exactly the config keys its rule passed, nothing filled in.

    The rule's slice (``onnes.stage_settings``) decides when Snakemake reruns the job, so
    a stage must read nothing else: a key the slice leaves out is a ConfigError naming
    it, not the schema's default (which would change the result without a rerun). That
    holds for ``settings[key]`` and for ``settings.get(key, default)`` alike: ``get``
    returns its default only for a key the schema does not define there (a modality
    under a model's ``processes``, say), never for one the schema would have filled.
    """

    def __init__(self, value: dict[str, Any], path: str = "", filled: Any = None):
        filled = filled if isinstance(filled, dict) else {}
        super().__init__((key, _sliced(item, f"{path}{key}.", filled.get(key))) for key, item in value.items())
        self.path = path
        self._schema_keys = frozenset(filled)

    def __missing__(self, key: str):
        raise ConfigError(f"--settings has no '{self.path}{key}': the stage read a config key its rule's slice "
                          "leaves out (add it to the rule's slice in onnes.stage_settings)")

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self[key]
        if key in self._schema_keys:  # the schema fills it: the slice left it out
            return self.__missing__(key)
        return default


# It dumps as the mapping it is (the report and `onnes config show` write YAML).
yaml.SafeDumper.add_representer(StageSlice, yaml.representer.SafeRepresenter.represent_dict)


def _sliced(value: Any, path: str, filled: Any = None) -> Any:
    if isinstance(value, dict):
        return StageSlice(value, path, filled)
    if isinstance(value, list):
        filled_items = filled if isinstance(filled, list) and len(filled) == len(value) else [None] * len(value)
        return [_sliced(item, path, other) for item, other in zip(value, filled_items)]
    return value


def parse_settings(text: str) -> StageSlice:
    """Parse the JSON a rule passes to a stage (``--settings``), a config subset.

    It is validated as part of a config (types, enums, checks within a section), and
    returned as given: the workflow's config is complete, so a slice of it holds every
    key below the ones it names, and a key it does not name is an error
    (:class:`StageSlice`; the validated copy, defaults filled, tells which keys the
    schema sets)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--settings is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError("--settings must be a JSON object")
    filled = validate(copy.deepcopy(value), whole=False)
    return StageSlice(value, filled=filled)


def allowed_elements(data_config: dict[str, Any]) -> frozenset[str]:
    symbols = data_config.get("allowed_elements")
    if symbols is None:
        symbols = [Element.from_Z(z).symbol for z in range(1, MAX_Z + 1)]
    return frozenset(symbols) - frozenset(data_config.get("excluded_elements") or [])
