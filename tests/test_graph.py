"""The campaign graph: the links between models and the data sets' roles, on the shipped
configs and on small hand-written ones."""

from pathlib import Path

import pytest
import yaml

from onnes.config import deep_merge, validate
from onnes.graph import CampaignGraph

REPO = Path(__file__).resolve().parents[1]


def campaign(*overlays: str, **extra) -> CampaignGraph:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for name in overlays:
        config = deep_merge(config, yaml.safe_load((REPO / "config" / name).read_text()))
    return CampaignGraph(validate(deep_merge(config, extra), samplers=False))


def test_default_campaign_links():
    graph = campaign()
    assert graph.weights_of("flow-tc-uncond") == "flow-tc-cfg"
    assert graph.weights_of("flow-tc-cfg") == "flow-tc-cfg"
    assert graph.base_of("flow-tc-cfg") == "flow-general"  # adapter base (full fine-tune)
    assert graph.base_of("flow-tc-reward") == "flow-tc-cfg"  # reward source
    assert graph.reward_samples("flow-tc-reward") == "flow-tc-uncond"
    assert graph.is_reward_finetune("flow-tc-reward") and not graph.is_reward_finetune("flow-tc-cfg")
    # guided model -> its unguided twin (same weights); reward fine-tune -> the samples it weighs;
    # the adapter model has no twin and falls back to its base
    pairs = graph.steering_pairs()
    assert pairs["flow-tc-cfg"] == "flow-tc-uncond"
    assert pairs["flow-tc-reward"] == "flow-tc-uncond"
    assert pairs["flow-tc-adapter"] == "flow-general"
    assert graph.chain_sources() == {"flow-tc-reward", "flow-tc-uncond"}
    # the trainings the chain waits for: its own and every model it starts from
    assert graph.chain_trainings() == {"flow-tc-reward", "flow-tc-uncond", "flow-tc-cfg", "flow-general"}
    assert "flow-tc-uncond" not in graph.checkpoint_owners()


def test_linked_entries_follow_every_link_transitively():
    graph = campaign()
    assert set(graph.linked_entries("flow-tc-reward")) == {"flow-tc-reward", "flow-tc-cfg", "flow-tc-uncond",
                                                           "flow-general"}
    assert set(graph.linked_entries("flow")) == {"flow"}


def test_trained_models_include_the_weights_active_models_take():
    graph = campaign(active_models=["flow-tc-uncond"])
    # flow-tc-uncond samples flow-tc-cfg's checkpoint, which starts from flow-general
    assert graph.trained_models() == {"flow-tc-uncond", "flow-tc-cfg", "flow-general"}
    assert graph.used_combined() == ["general"]
    assert campaign(active_models=["flow"]).used_combined() == []


def test_a_steered_model_pairs_only_with_an_active_counterpart():
    alone = campaign(active_models=["flow-tc-cfg"])
    assert alone.steering_pairs() == {}
    assert alone.chain_sources() == set() and alone.chain_trainings() == set()
    with_base = campaign(active_models=["flow-tc-adapter", "flow-general"])
    assert with_base.steering_pairs() == {"flow-tc-adapter": "flow-general"}


def test_data_set_roles_of_the_demo():
    graph = campaign("demo.yaml")
    assert graph.hull_datasets() == [d for d in ("mpts52", "wbm") if d in graph.datasets()]
    assert graph.tc_inputs() == {"supercon": "supercon", "structures": "3dsc"}
    assert graph.structure_reference() == "mp20"
    assert set(graph.known_datasets()) <= set(graph.datasets())
    assert "supercon" not in graph.known_datasets()  # compositions, not structures
    assert graph.tc_enabled() and graph.dft_enabled()


def test_roles_follow_the_config():
    graph = campaign("demo.yaml", active_models=["flow"], screen={"hull_datasets": []}, tc={"enabled": False},
                     loop={"rounds": 1})  # a round learns from the Tc stage's tables
    assert graph.hull_datasets() == []
    assert not graph.tc_enabled() and not graph.dft_enabled()
    no_supercon = campaign("demo.yaml", tc={"predictor": {"datasets": ["3dsc"]}})
    assert no_supercon.tc_inputs() == {"structures": "3dsc"}


def test_source_dataset_of_models_baselines_and_user_candidates(tmp_path):
    (tmp_path / "mine.cif").write_text("")
    graph = campaign("demo.yaml", candidates={"mine": {"path": str(tmp_path / "mine.cif"), "dataset": "mp20"}})
    assert graph.source_dataset("flow") == "mp20"
    assert graph.source_dataset("mine") == "mp20"
    assert graph.source_dataset("substitution") == graph.config["baselines"]["substitution"]["dataset"]
    assert graph.candidate_sources[-1] == "mine"


@pytest.mark.parametrize("key", ["weights_from", "adapter"])
def test_a_link_to_an_unknown_model_is_a_config_error(key):
    from onnes.config import ConfigError

    entry = {"weights_from": "nowhere"} if key == "weights_from" else {"adapter": {"base": "nowhere"}}
    with pytest.raises(ConfigError, match="is not another model"):
        campaign(models={"flow-tc-uncond": entry})
