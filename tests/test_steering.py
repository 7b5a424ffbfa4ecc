"""Tc steering of generation: condition statistics, guidance limits, adapters on a frozen
base, chemistry constraints, and the config checks around them."""

import numpy as np
import pytest
import torch
from models_fixtures import model_settings, toy_structures, write_toy_splits

from onnes import crystals
from onnes.config import ConfigError, validate
from onnes.models.batch import CrystalDataset, Vocabulary
from onnes.models.model import GenerativeModel
from onnes.sampling import allowed_type_mask, sample_shard
from onnes.train import checkpoint
from onnes.train.loop import train


@pytest.fixture(scope="module")
def dataset():
    structures = toy_structures(12)
    table = crystals.from_structures(structures, [str(i) for i in range(12)], "toy")
    table["tc_K"] = np.linspace(0, 40, 12)
    return CrystalDataset.from_table(table, cond_columns=["tc_K"])


@pytest.fixture(scope="module")
def vocabulary(dataset):
    return Vocabulary(np.concatenate(dataset.species))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A tiny unconditional model trained to the end (the 'pretrained' base)."""
    directory = tmp_path_factory.mktemp("base")
    splits = write_toy_splits(directory)
    train(model_settings(), "base", splits["train"], splits["val"], directory / "base", seed=0)
    return splits, directory / "base" / "last.ckpt"


def test_guidance_zero_is_the_unconditional_model(dataset, vocabulary):
    torch.manual_seed(0)
    model = GenerativeModel(model_settings(conditioning={"columns": ["tc_K"]}), len(vocabulary)).eval()
    num_atoms = torch.tensor([4, 5])
    cond = torch.tensor([[30.0], [30.0]])
    guided_zero = model.sample(num_atoms, 4, torch.Generator().manual_seed(0), cond=cond, guidance=0.0)
    unconditional = model.sample(num_atoms, 4, torch.Generator().manual_seed(0), cond=None)
    conditional = model.sample(num_atoms, 4, torch.Generator().manual_seed(0), cond=cond, guidance=1.0)
    assert all(torch.equal(a, b) for a, b in zip(guided_zero, unconditional))
    assert not torch.allclose(guided_zero[2], conditional[2])


def test_condition_is_standardised_with_training_statistics(dataset, vocabulary):
    model = GenerativeModel(model_settings(conditioning={"columns": ["tc_K"]}), len(vocabulary))
    model.set_condition_stats(torch.from_numpy(dataset.cond))
    assert model.cond_mean.item() == pytest.approx(20.0)
    assert model.cond_std.item() == pytest.approx(float(np.std(dataset.cond, ddof=1)), rel=1e-5)
    assert "cond_mean" in model.state_dict()  # travels with the checkpoint


def test_adapter_fine_tune_starts_at_the_base_and_trains_only_adapters(base_run, tmp_path):
    splits, base_path = base_run
    settings = model_settings(conditioning={"columns": ["tc_K"]}, train={"steps": 6, "lr": 0.01})
    settings["adapter"] = {"base": "base"}
    # A different denoiser size in the fine-tune's own entry is replaced by the base's.
    settings["denoiser"] = {**settings["denoiser"], "hidden": 48}
    train(settings, "tuned", splits["train"], splits["val"], tmp_path / "tuned", seed=0, base_checkpoint=base_path)
    base, tuned = checkpoint.load(base_path), checkpoint.load(tmp_path / "tuned" / "last.ckpt")
    assert tuned["settings"]["denoiser"] == base["settings"]["denoiser"]
    assert tuned["vocabulary"] == base["vocabulary"]
    changed = {k for k, v in base["state_dict"].items() if not torch.equal(v, tuned["state_dict"][k])}
    assert changed == set()  # base weights frozen (EMA of frozen weights is the weights)
    new = set(tuned["state_dict"]) - set(base["state_dict"])
    assert any(k.startswith("denoiser.adapters") for k in new) and "cond_mean" in new
    adapter_weights = [v for k, v in tuned["state_dict"].items() if k.startswith("denoiser.adapters")]
    assert any(v.abs().sum() > 0 for v in adapter_weights)  # the zero-initialised adapters learned

    # At initialisation (zero adapters) the fine-tune reproduces the base exactly.
    vocab = Vocabulary(base["vocabulary"])
    fresh = GenerativeModel(tuned["settings"], len(vocab)).eval()
    missing, _ = fresh.load_state_dict(base["state_dict"], strict=False)
    reference = GenerativeModel(base["settings"], len(vocab)).eval()
    reference.load_state_dict(base["state_dict"])
    num_atoms = torch.tensor([4, 6])
    cond = torch.tensor([[25.0], [25.0]])
    a = fresh.sample(num_atoms, 3, torch.Generator().manual_seed(0), cond=cond)
    b = reference.sample(num_atoms, 3, torch.Generator().manual_seed(0))
    assert all(torch.allclose(x.float(), y.float()) for x, y in zip(a, b))


def test_full_fine_tune_trains_the_base_weights_too(base_run, tmp_path):
    """adapter.freeze_base: false fine-tunes every weight of the pretrained model with the
    condition (the pretrain-then-fine-tune recipe of guided superconductor diffusion)."""
    splits, base_path = base_run
    settings = model_settings(conditioning={"columns": ["tc_K"]}, train={"steps": 6, "lr": 0.01})
    settings["adapter"] = {"base": "base", "freeze_base": False}
    train(settings, "full", splits["train"], splits["val"], tmp_path / "full", seed=0, base_checkpoint=base_path)
    base, tuned = checkpoint.load(base_path), checkpoint.load(tmp_path / "full" / "last.ckpt")
    floats = [k for k, v in base["state_dict"].items() if v.is_floating_point() and k.startswith("denoiser.")]
    changed = [k for k in floats if not torch.equal(base["state_dict"][k], tuned["state_dict"][k])]
    assert len(changed) > len(floats) // 2  # the base's own weights moved
    assert tuned["vocabulary"] == base["vocabulary"]


def test_reward_fine_tune_starts_from_the_source_and_learns_the_rewarded_samples(base_run, tmp_path):
    """reward.source: every weight starts at the source's and trains on the rewarded set;
    the architecture is the source's whatever the entry says."""
    splits, base_path = base_run
    settings = model_settings(train={"steps": 6, "lr": 0.01})
    settings["reward"] = {"source": "base"}
    settings["denoiser"] = {**settings["denoiser"], "hidden": 48}
    train(settings, "rewarded", splits["train"], splits["val"], tmp_path / "r", seed=0, base_checkpoint=base_path)
    base, tuned = checkpoint.load(base_path), checkpoint.load(tmp_path / "r" / "last.ckpt")
    assert set(tuned["state_dict"]) == set(base["state_dict"])  # no adapters, no condition embedding
    assert tuned["settings"]["denoiser"] == base["settings"]["denoiser"]
    moved = [k for k, v in base["state_dict"].items() if v.is_floating_point() and k.startswith("denoiser.")
             and not torch.equal(v, tuned["state_dict"][k])]
    assert moved
    with pytest.raises(ValueError, match="checkpoint"):
        train(settings, "rewarded", splits["train"], splits["val"], tmp_path / "x", seed=0)


def test_reward_fine_tune_of_a_conditional_model_trains_its_unconditional_branch(base_run, tmp_path):
    """A guided model's reward fine-tune keeps its condition statistics and adapters,
    trains on unlabelled samples with every condition dropped, and samples unguided."""
    splits, base_path = base_run
    tuned_settings = model_settings(conditioning={"columns": ["tc_K"]}, train={"steps": 4, "lr": 0.01})
    tuned_settings["adapter"] = {"base": "base", "freeze_base": False}
    train(tuned_settings, "cfg", splits["train"], splits["val"], tmp_path / "cfg", seed=0, base_checkpoint=base_path)
    source_path = tmp_path / "cfg" / "last.ckpt"
    unlabelled = crystals.read_table(splits["train"]).drop(columns=["tc_K"], errors="ignore")
    crystals.write_table(unlabelled, tmp_path / "samples.parquet")
    settings = model_settings(train={"steps": 4, "lr": 0.01})
    settings["reward"] = {"source": "cfg"}
    train(settings, "rewarded", tmp_path / "samples.parquet", splits["val"], tmp_path / "r", seed=0,
          base_checkpoint=source_path)
    source, tuned = checkpoint.load(source_path), checkpoint.load(tmp_path / "r" / "last.ckpt")
    assert set(tuned["state_dict"]) == set(source["state_dict"])
    assert tuned["settings"]["conditioning"]["p_uncond"] == 1.0
    for key in ("cond_mean", "cond_std"):
        assert torch.equal(tuned["state_dict"][key], source["state_dict"][key])
    shard = tmp_path / "s.parquet"
    sample_shard(tmp_path / "r" / "last.ckpt", 0, shard, seed=0,
                 settings={**tuned["settings"], "sample": {**tuned["settings"]["sample"], "num_samples": 4, "shards": 1}},
                 name="rewarded")
    assert len(crystals.read_table(shard)) == 4


def test_adapter_needs_an_unconditional_base_of_the_same_family(base_run, tmp_path):
    splits, base_path = base_run
    settings = model_settings("diffusion", conditioning={"columns": ["tc_K"]})
    settings["adapter"] = {"base": "base"}
    with pytest.raises(ValueError, match="family"):
        train(settings, "tuned", splits["train"], splits["val"], tmp_path / "t", seed=0, base_checkpoint=base_path)


def test_weights_from_samples_another_model_under_its_own_name(base_run, tmp_path):
    _, base_path = base_run
    settings = model_settings(sample={"num_samples": 6, "shards": 1, "elements": ["Na", "Cl", "Si"]})
    sample_shard(base_path, 0, tmp_path / "s.parquet", seed=0, settings=settings, name="variant")
    table = crystals.read_table(tmp_path / "s.parquet")
    assert table.id.str.startswith("variant-").all() and (table.source == "variant").all()
    # Chemistry constraint: only the allowed elements appear.
    assert set(np.concatenate(table.species.to_list()).tolist()) <= {11, 17, 14}


def test_allowed_elements_mask_and_its_errors(vocabulary):
    mask = allowed_type_mask(["Na", "Cl"], vocabulary, "cpu")
    assert mask.sum() == 2 and set(vocabulary.decode(np.flatnonzero(mask.numpy()))) == {11, 17}
    assert allowed_type_mask(None, vocabulary, "cpu") is None
    with pytest.raises(ValueError, match="unknown element"):
        allowed_type_mask(["Xx"], vocabulary, "cpu")
    with pytest.raises(ValueError, match="vocabulary"):
        allowed_type_mask(["U"], vocabulary, "cpu")


def test_masked_types_draw_only_allowed_elements(vocabulary):
    torch.manual_seed(0)
    model = GenerativeModel(model_settings(types="masked"), len(vocabulary)).eval()
    allowed = allowed_type_mask(["Mg", "B"], vocabulary, "cpu")
    types, _, _ = model.sample(torch.tensor([5, 7]), 5, torch.Generator().manual_seed(0), allowed_types=allowed)
    assert set(vocabulary.decode(types.numpy()).tolist()) <= {12, 5}


@pytest.mark.parametrize("entry, message", [
    ({"weights_from": "nope"}, "weights_from"),
    ({"adapter": {"base": "m"}, "conditioning": {"columns": ["tc_K"]}}, "adapter.base"),
    ({"adapter": {"base": "other"}}, "adapters need conditioning"),
    ({"sample": {"target": [10.0, 20.0]}, "conditioning": {"columns": ["tc_K"]}}, "sample.target"),
    ({"sample": {"elements": ["Qq"]}}, "unknown element"),
    ({"reward": {"source": "nope"}}, "reward.source"),
    ({"reward": {"source": "other"}, "conditioning": {"columns": ["tc_K"]}}, "architecture and conditioning"),
    ({"reward": {"source": "other", "threshold": 15.0}}, "no classifier"),
    ({"family": "diffusion", "reward": {"source": "other"}}, "flow model"),
    ({"reward": {"source": "other", "samples": "m"}}, "reward.samples"),
])
def test_steering_config_errors_name_the_key(entry, message):
    with pytest.raises(ConfigError, match=message):
        validate({"models": {"m": {"family": "flow", **entry}, "other": {"family": "flow"}}})


def test_a_reward_fine_tune_needs_the_tc_stage_only_when_it_runs():
    models = {"m": {"family": "flow", "reward": {"source": "other"}}, "other": {"family": "flow"}}
    validate({"models": models, "tc": {"enabled": False}, "active_models": ["other"]})  # defined, not run
    with pytest.raises(ConfigError, match="tc.enabled is false"):
        validate({"models": models, "tc": {"enabled": False}})
    with pytest.raises(ConfigError, match="not among active_models"):
        validate({"models": {**models, "m": {"family": "flow", "reward": {"source": "other"}}},
                  "active_models": ["m"]})
