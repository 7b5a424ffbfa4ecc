"""The campaign graph: which models feed which, and what each data set is used for.

A model entry can point at other models: ``weights_from`` (sample another model's
checkpoint under its own name, e.g. unguided), ``adapter.base`` (train adapters on a
frozen pretrained model), ``reward.source`` (fine-tune that model's weights) and
``reward.samples`` (the model whose screened samples the reward weighs) and
``distill.source`` (train a few-step model on that model's reflow pairs). The workflow's
input functions, the config checks and each job's settings slice all follow these links;
they ask :class:`CampaignGraph`, the one place that walks them. It also answers which
data sets play which role (the strict-novelty reference, the hull's extra entries, the
Tc predictor's inputs, the report's reference set), from the roles the data catalogue
names.

It reads a config the schema has filled (``onnes.config.validate``) and imports nothing
but the catalogue, so that the config checks can use it.
"""

from __future__ import annotations

from typing import Any

from onnes import catalogue
from onnes.rounds import round_models


class CampaignGraph:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.models: dict[str, dict[str, Any]] = config["models"]

    # -- the campaign's sources -----------------------------------------------------
    @property
    def active(self) -> list[str]:
        """The models the campaign samples (active_models, else every model defined)."""
        return list(self.config["active_models"] or self.models)

    @property
    def baselines(self) -> list[str]:
        return list(self.config["active_baselines"])

    @property
    def user_candidates(self) -> list[str]:
        return list(self.config["candidates"])

    @property
    def candidate_sources(self) -> list[str]:
        """Everything screened through the same funnel: models, baselines, the user's own."""
        return self.active + self.baselines + self.user_candidates

    # -- links between models ---------------------------------------------------------
    def weights_of(self, name: str) -> str:
        """The model whose checkpoint ``name`` samples from (itself, or its weights_from)."""
        return self.models[name]["weights_from"] or name

    def base_of(self, name: str) -> str | None:
        """The pretrained model a training starts from: an adapter's base, a reward
        fine-tune's source or a distilled model's teacher."""
        entry = self.models[name]
        return entry["adapter"]["base"] or entry["reward"]["source"] or self.distill_source(name)

    def distill_source(self, name: str) -> str | None:
        """The teacher whose reflow pairs ``name`` trains on (None: not distilled)."""
        return self.models[name]["distill"]["source"]

    def is_reward_finetune(self, name: str) -> bool:
        """Whether ``name`` trains on its source's rewarded samples, not on a data set."""
        return bool(self.models[name]["reward"]["source"])

    def reward_samples(self, name: str) -> str | None:
        """The model whose samples a reward fine-tune weighs (reward.samples, else its source)."""
        reward = self.models[name]["reward"]
        return reward["samples"] or reward["source"]

    @staticmethod
    def references(entry: dict[str, Any]) -> dict[str, str | None]:
        """The model names an entry points at, by config key."""
        return {"adapter.base": entry["adapter"]["base"], "weights_from": entry["weights_from"],
                "reward.source": entry["reward"]["source"], "reward.samples": entry["reward"]["samples"],
                "distill.source": entry["distill"]["source"]}

    def linked_entries(self, name: str) -> dict[str, dict[str, Any]]:
        """A model's entry plus every entry it points at, transitively: the whole
        architecture a checkpoint was trained with, and every name the checks look up."""
        names, queue = [], [name]
        while queue:
            current = queue.pop(0)
            if current in names:
                continue
            names.append(current)
            queue += [n for n in self.references(self.models[current]).values() if n]
        return {n: self.models[n] for n in names}

    def trained_models(self) -> set[str]:
        """The models a run trains: the active ones and those whose weights they take."""
        trained = set(self.active)
        for name in self.active:
            if name in self.models:
                entry = self.models[name]
                trained |= {ref for ref in (entry["weights_from"], entry["adapter"]["base"],
                                            entry["reward"]["source"], entry["distill"]["source"]) if ref}
                trained |= {self.models[ref]["adapter"]["base"] for ref in list(trained)
                            if ref in self.models and self.models[ref]["adapter"]["base"]}
        return trained & set(self.models)

    def checkpoint_owners(self) -> list[str]:
        """Active models with a checkpoint of their own (no weights_from): whose training
        curves the report draws."""
        return [m for m in self.active if not self.models[m]["weights_from"]]

    def chain_sources(self) -> set[str]:
        """Sources another model trains on the output of: a reward fine-tune's samples
        (screened and predicted first), and the fine-tune itself (the campaign's tail)."""
        return {source for name in self.active if self.is_reward_finetune(name)
                for source in (name, self.reward_samples(name))}

    def chain_trainings(self) -> set[str]:
        """The chain sources and every model they link to (weights, adapter base, reward
        source): the trainings the chain waits for, which start before the others."""
        return {name for source in self.chain_sources() for name in self.linked_entries(source)}

    def steering_pairs(self) -> dict[str, str]:
        """Each steered model -> its unconditional counterpart: for a reward fine-tune, the
        model whose samples it weighs; for a guided model (sample.target set), the same
        weights sampled without a target if configured, else an adapter's pretrained base."""
        pairs = {}
        active = self.active
        for name in active:
            entry = self.models[name]
            if self.is_reward_finetune(name):
                if self.reward_samples(name) in active:
                    pairs[name] = self.reward_samples(name)
                continue
            if entry["sample"]["target"] is None:
                continue
            twins = [other for other in active if other != name
                     and self.weights_of(other) == self.weights_of(name)
                     and self.models[other]["sample"]["target"] is None]
            base = entry["adapter"]["base"]
            if twins:
                pairs[name] = twins[0]
            elif base in active:
                pairs[name] = base
        return pairs

    # -- rounds (loop) -----------------------------------------------------------------
    @property
    def rounds(self) -> int:
        return self.config["loop"]["rounds"]

    def round_of(self, name: str) -> int:
        """The round a candidate source belongs to: k for a loop's generated m-r{k}, else 0."""
        generated = round_models(self.config["loop"])
        return generated[name][1] if name in generated else 0

    def round_sources(self, k: int) -> list[str]:
        """The candidate sources of round ``k`` (round 0: everything the campaign configures)."""
        return [name for name in self.candidate_sources if self.round_of(name) == k]

    def round_dft_top_k(self, k: int) -> int:
        """Candidates round ``k`` sends to DFT: dft.top_k for round 0, loop.dft_top_k after."""
        later = self.config["loop"]["dft_top_k"]
        return self.config["dft"]["top_k"] if k == 0 or later is None else later

    def dft_rounds(self) -> list[int]:
        """The rounds whose best candidates go to DFT."""
        dft = self.config["dft"]
        if not (self.tc_enabled() and dft["enabled"]):
            return []
        return [k for k in range(self.rounds) if self.round_dft_top_k(k) > 0 and self.round_sources(k)]

    # -- data sets and their roles ----------------------------------------------------
    def source_dataset(self, name: str) -> str:
        """The curated data set a model trains on, a baseline draws from, or the user's
        candidates are judged against (novelty, metrics)."""
        if name in self.models:
            return self.models[name]["dataset"]
        if name in self.config["candidates"]:
            return self.config["candidates"][name]["dataset"]
        return self.config["baselines"][name]["dataset"]

    def structure_datasets(self) -> list[str]:
        """The data sets of crystal structures defined: built-in ones the campaign
        curates, then its own, then unions of them."""
        data = self.config["data"]
        return ([d for d in data["datasets"] if d in catalogue.STRUCTURE_DATASETS] + list(data["custom"])
                + list(data.get("combined", {})))

    def used_combined(self) -> list[str]:
        """The combined data sets a run builds: those a trained model or a candidate source
        uses. A preset inherits the default campaign's combined sets; one whose models it
        does not train is neither built nor needs its members curated."""
        used = {self.models[m]["dataset"] for m in self.trained_models()}
        used |= {entry["dataset"] for entry in self.config["candidates"].values()}
        return [name for name in self.config["data"]["combined"] if name in used]

    def datasets(self) -> list[str]:
        """Every data set the run curates, imports or combines."""
        data = self.config["data"]
        return list(data["datasets"]) + list(data["custom"]) + self.used_combined()

    def known_datasets(self) -> list[str]:
        """The structure data sets strict novelty matches against (every split of each)."""
        built = self.datasets()
        return [d for d in self.structure_datasets() if d in built]

    def hull_datasets(self) -> list[str]:
        """Curated data sets whose DFT energies join MP-20's reference entries on the hull."""
        chosen = self.config["screen"]["hull_datasets"]
        if chosen is None:
            chosen = [d for d in catalogue.DEFAULT_HULL_DATASETS if d in self.datasets()]
        return list(chosen)

    def tc_inputs(self) -> dict[str, str]:
        """The Tc predictor's labelled inputs the run curates: its argument -> data set."""
        built = self.datasets()
        return {catalogue.TC_INPUTS[d]: d for d in self.config["tc"]["predictor"]["datasets"] if d in built}

    def tc_enabled(self) -> bool:
        return bool(self.config["tc"]["enabled"] and self.tc_inputs())

    def dft_enabled(self) -> bool:
        dft = self.config["dft"]
        return self.tc_enabled() and dft["enabled"] and dft["top_k"] > 0

    def structure_reference(self) -> str:
        """The training set the report compares samples' densities and elements with."""
        defined = self.structure_datasets()
        return catalogue.STRUCTURE_REFERENCE if catalogue.STRUCTURE_REFERENCE in defined else defined[0]

    def tc_reference(self) -> str | None:
        """The data set whose measured Tc the steering table and report compare with."""
        reference = self.config["tc"]["steering"]["training_dataset"]
        return reference if reference in self.datasets() else None
