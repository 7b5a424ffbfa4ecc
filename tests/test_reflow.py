"""Reflow (models.<name>.distill): straightening a flow on a law with a known answer,
the teacher's pairs, the pairs file, the fine-tune from the source, and its config."""

import json
import math
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from models_fixtures import model_settings, write_toy_splits
from test_samplers import POINTS, exact_velocity, straight_paths

from onnes import config as cfg
from onnes.models.batch import crystal_index
from onnes.models.lattice import matrix_from_params
from onnes.models.model import GenerativeModel
from onnes.models.processes import Context, LinearFlow, TorusFlow, signed_wrap, wrap
from onnes.models.samplers import Euler
from onnes.sampling import load_model, sample_pairs, sample_shard
from onnes.stage_settings import stage_settings
from onnes.train import checkpoint
from onnes.train.loop import split_pairs, train
from onnes.train.reflow import PairSet, with_data


def teacher_pairs_1d(count: int, steps: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, x1): the exact independent-coupling flow of N(0, 1) -> 0.3 delta(-1) +
    0.7 delta(2) integrated from each x0 (a monotone map: x0 below the 0.3 quantile goes
    to -1, the rest to 2)."""
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(count, 1, generator=gen)
    state = (x0, torch.zeros(count, 3), torch.zeros(count, 2))

    def predict(current, t):
        return exact_velocity(current[0], t), torch.zeros(count, 3), torch.zeros(count, 2)

    (x1, _, _), _ = Euler(straight_paths()).run(state, predict, steps, Context(torch.arange(count), count), gen)
    return x0, x1


def fit_velocity(x0: torch.Tensor, x1: torch.Tensor, coupled: bool, iterations: int = 1500) -> torch.nn.Module:
    """A small network regressed on LinearFlow's flow-matching targets: on the pairs'
    own paths (``coupled``, reflow) or on paths from fresh base draws (independent)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(),
                              torch.nn.Linear(64, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    process, gen = LinearFlow(), torch.Generator().manual_seed(2)
    for _ in range(iterations):
        rows = torch.randint(len(x0), (512,), generator=gen)
        t = torch.rand(512, 1, generator=gen)
        xt, target = process.corrupt(x1[rows], t, None, gen, x0=x0[rows] if coupled else None)
        loss = ((net(torch.cat([xt, t], -1)) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net


def euler(net: torch.nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    with torch.no_grad():
        for k in range(steps):
            x = x + net(torch.cat([x, torch.full_like(x, k / steps)], -1)) / steps
    return x.squeeze(-1)


def test_reflow_carries_a_two_point_law_in_one_euler_step():
    # Known answer: the pairs' straight paths do not cross (the teacher's map is
    # monotone), so the reflowed velocity at t = 0 is x1 - x0 itself and one Euler step
    # lands on the two points with weights 0.3 / 0.7 (up to how sharply a small network
    # draws the jump at the 0.3 quantile). The same network fitted on the independent
    # coupling puts one step at the law's mean, 1.1 (Liu et al. 2023).
    x0, x1 = teacher_pairs_1d(4000)
    assert float(((x1 + 1).abs() < 0.01).double().mean()) == pytest.approx(0.3, abs=0.03)
    fresh = torch.randn(4000, 1, generator=torch.Generator().manual_seed(3))

    def near_points(x, tolerance):
        nearest = (x.unsqueeze(-1) - POINTS.float()).abs().min(-1)
        return float((nearest.values < tolerance).double().mean()), float((nearest.indices == 0).double().mean())

    reflowed = fit_velocity(x0, x1, coupled=True)
    on_points, low = near_points(euler(reflowed, fresh, 1), 0.3)
    assert on_points > 0.8 and low == pytest.approx(0.3, abs=0.03)
    on_points, low = near_points(euler(reflowed, fresh, 2), 0.1)
    assert on_points > 0.85 and low == pytest.approx(0.3, abs=0.03)
    independent = euler(fit_velocity(x0, x1, coupled=False), fresh, 1)
    assert near_points(independent, 0.3)[0] < 0.2 and float(independent.mean()) == pytest.approx(1.1, abs=0.1)


def test_flow_paths_start_at_a_given_base_point():
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(5, 6, generator=gen), torch.randn(5, 6, generator=gen)
    t = torch.rand(5, 1, generator=gen)
    xt, target = LinearFlow().corrupt(x1, t, None, gen, x0=x0)
    assert torch.allclose(xt, (1 - t) * x0 + t * x1) and torch.allclose(target, x1 - x0)
    crystal = torch.tensor([0, 0, 1, 1, 1])
    f0, f1 = torch.rand(5, 3, generator=gen), torch.rand(5, 3, generator=gen)
    ft, velocity = TorusFlow().corrupt(f1, t, Context(crystal, 2), gen, x0=f0)
    delta = signed_wrap(f1 - f0)
    assert torch.allclose(ft, wrap(f0 + t * delta))
    for c in (0, 1):  # the geodesic without its crystal mean
        rows = crystal == c
        assert torch.allclose(velocity[rows], delta[rows] - delta[rows].mean(0), atol=1e-6)


def test_unpaired_rows_draw_their_own_base_point():
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    x0[2:] = float("nan")
    t = torch.full((4, 1), 0.25)
    xt, target = LinearFlow().corrupt(x1, t, None, gen, x0=x0)
    assert torch.isfinite(xt).all() and torch.isfinite(target).all()
    assert torch.allclose(target[:2], x1[:2] - x0[:2])
    drawn = x1[2:] - target[2:]  # the base point each unpaired row drew
    assert torch.allclose(xt[2:], 0.75 * drawn + 0.25 * x1[2:], atol=1e-6)
    assert not torch.allclose(drawn, torch.zeros_like(drawn))


def tiny_model(family: str = "flow", **overrides) -> GenerativeModel:
    torch.manual_seed(0)
    return GenerativeModel(model_settings(family, **overrides), num_types=4).eval()


def test_teacher_pairs_hold_the_prior_draw_the_sample_came_from():
    model = tiny_model()
    num_atoms = torch.tensor([2, 3, 1])
    batch, coupling = model.teacher_pairs(num_atoms, 4, torch.Generator().manual_seed(5))
    types, frac, lattice = model.sample(num_atoms, 4, torch.Generator().manual_seed(5))
    assert torch.equal(batch.types, types) and torch.equal(batch.frac, frac) and torch.equal(batch.lattice, lattice)
    gen = torch.Generator().manual_seed(5)  # the prior is the stream's first draws
    assert torch.equal(coupling.lattice0, torch.randn(3, 6, generator=gen))
    assert torch.equal(coupling.frac0, torch.rand(6, 3, generator=gen))
    assert coupling.types0 is None  # masked types keep their own corruption
    assert torch.allclose(matrix_from_params(model.normalizer.decode(coupling.lattice1), num_atoms), batch.lattice)
    loss, parts = model.loss(batch, torch.Generator().manual_seed(0), coupling)
    assert torch.isfinite(loss) and set(parts) == {"loss_lattice", "loss_frac", "loss_types"}

    continuous = tiny_model(types="continuous")
    _, coupled = continuous.teacher_pairs(num_atoms, 2, torch.Generator().manual_seed(5))
    assert coupled.types0.shape == (6, 4)
    with pytest.raises(ValueError, match="reflow needs the flow family"):
        tiny_model("diffusion").teacher_pairs(num_atoms, 2)
    with pytest.raises(ValueError, match="reflow needs the flow family"):
        tiny_model("interpolant").teacher_pairs(num_atoms, 2)


def test_pairs_file_round_trip_subset_and_split(tmp_path):
    model = tiny_model()
    gen = torch.Generator().manual_seed(0)
    pairs = PairSet.from_batches([model.teacher_pairs(torch.tensor(sizes), 2, gen) for sizes in ([1, 3], [2, 4, 1])])
    assert len(pairs) == 5 and len(pairs.tensors["types"]) == 11
    pairs.save(tmp_path / "pairs.pt")
    loaded = PairSet.load(tmp_path / "pairs.pt")
    assert all(torch.equal(loaded.tensors[k], v) for k, v in pairs.tensors.items())
    batch, coupling = loaded.batch([3, 1])  # crystals of 4 and 3 atoms: atoms 6-9, then 1-3
    assert batch.num_atoms.tolist() == [4, 3] and torch.equal(batch.crystal, crystal_index(batch.num_atoms))
    assert torch.equal(batch.frac, torch.cat([pairs.tensors["frac"][6:10], pairs.tensors["frac"][1:4]]))
    assert torch.equal(coupling.frac0, torch.cat([pairs.tensors["frac0"][6:10], pairs.tensors["frac0"][1:4]]))
    assert torch.equal(coupling.lattice1, pairs.tensors["lattice1"][[3, 1]])
    train_part, val_part = split_pairs(loaded, 0.2, seed=0)
    assert (len(train_part), len(val_part)) == (4, 1)
    assert sorted(train_part.tensors["num_atoms"].tolist() + val_part.tensors["num_atoms"].tolist()) == [1, 1, 2, 3, 4]
    data_batch, _ = loaded.batch([0, 2])
    mixed, mixed_coupling = with_data(batch, coupling, data_batch)
    assert mixed.num_atoms.tolist() == [4, 3, 1, 2] and torch.equal(mixed.crystal, crystal_index(mixed.num_atoms))
    assert torch.equal(mixed_coupling.frac0[:7], coupling.frac0) and torch.isnan(mixed_coupling.frac0[7:]).all()
    assert torch.isnan(mixed_coupling.lattice1[2:]).all() and torch.isnan(mixed_coupling.lattice0[2:]).all()
    loss, parts = model.loss(mixed, torch.Generator().manual_seed(0), mixed_coupling)
    assert torch.isfinite(loss) and all(torch.isfinite(torch.tensor(v)) for v in parts.values())
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a reflow pairs file"):
        PairSet.load(tmp_path / "other.pt")


def test_reflow_fine_tunes_every_source_weight_on_its_pairs(tmp_path):
    splits = write_toy_splits(tmp_path)
    teacher = model_settings("flow")
    train(teacher, "teacher", splits["train"], splits["val"], tmp_path / "teacher", seed=0)
    source = tmp_path / "teacher/last.ckpt"
    distill = {"source": "teacher", "pairs": 24, "teacher_steps": 3, "val_fraction": 0.25}
    summary = sample_pairs(source, tmp_path / "pairs.pt", 0, teacher, distill, "student")
    assert summary == {**summary, "pairs": 24, "teacher_steps": 3}
    # The student's entry names another width: the source's architecture wins.
    entry = {**teacher, "distill": distill, "denoiser": {**teacher["denoiser"], "hidden": 48},
             "train": {**teacher["train"], "steps": 4, "lr": 1e-4}}
    student = cfg.validate({"models": {"teacher": teacher, "student": entry}})["models"]["student"]
    # The workflow's command, with the rule's slice: seeded by (seed, name), the same pairs.
    payload = json.dumps(stage_settings({"seed": 0, "models": {"teacher": teacher, "student": student}},
                                        "reflow_pairs", model="student"))
    subprocess.run([sys.executable, "-m", "onnes.cli", "sample", "pairs", "--checkpoint", str(source), "--model",
                    "student", "--out", str(tmp_path / "again.pt"), "--settings", payload], check=True, timeout=300)
    assert torch.equal(PairSet.load(tmp_path / "again.pt").tensors["frac"],
                       PairSet.load(tmp_path / "pairs.pt").tensors["frac"])
    with pytest.raises(ValueError, match="pass that model's checkpoint"):
        train(student, "student", None, None, tmp_path / "student", seed=0)
    with pytest.raises(ValueError, match="reflow pairs"):
        train(student, "student", None, None, tmp_path / "student", seed=0, base_checkpoint=source)
    result = train(student, "student", None, None, tmp_path / "student", seed=0, base_checkpoint=source,
                   pairs_path=tmp_path / "pairs.pt")
    assert result["finished"] and result["rows"][-1]["val_loss"] != ""
    source_state, state = checkpoint.load(source), checkpoint.load(tmp_path / "student/last.ckpt")
    assert state["vocabulary"] == source_state["vocabulary"]
    assert state["num_atoms_histogram"] == source_state["num_atoms_histogram"]
    assert state["settings"]["denoiser"] == source_state["settings"]["denoiser"]
    moved = [k for k, v in state["state_dict"].items() if not torch.equal(v, source_state["state_dict"][k])]
    assert moved and all(torch.equal(state["state_dict"][k], source_state["state_dict"][k])
                         for k in ("normalizer.mean", "normalizer.std"))
    load_model(tmp_path / "student/last.ckpt")
    # A quarter of every batch from the data set, unpaired.
    mixed = {**student, "distill": {**student["distill"], "mix_data": 0.25}}
    result = train(mixed, "student", splits["train"], splits["val"], tmp_path / "mixed", seed=0,
                   base_checkpoint=source, pairs_path=tmp_path / "pairs.pt")
    assert result["finished"] and all(math.isfinite(row["loss"]) for row in result["rows"])
    student_sampling = model_settings("flow", sample={"steps": 2, "num_samples": 4, "shards": 1})
    assert sample_shard(tmp_path / "student/last.ckpt", 0, tmp_path / "s.parquet", 0, student_sampling)["count"] == 4


@pytest.mark.parametrize("entry, message", [
    ({"family": "diffusion", "distill": {"source": "diffusion"}}, "no paired base point"),
    ({"family": "flow", "distill": {"source": "diffusion"}}, "is a diffusion model"),
    ({"family": "interpolant", "distill": {"source": "interpolant"}}, "from the source's ODE"),
    ({"family": "flow", "distill": {"source": "nope"}}, "'nope' is not another model"),
    ({"family": "flow", "weights_from": "flow", "distill": {"source": "flow"}}, "takes its architecture"),
    ({"family": "flow", "distill": {"source": "flow", "method": "progressive"}}, "distill.method"),
])
def test_a_distill_entry_is_checked(entry, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(REPO / "config/quality.yaml", {"models": {"x": entry}})


def test_a_distilled_model_links_to_its_source():
    from onnes.graph import CampaignGraph

    config = cfg.load(REPO / "config/quality.yaml", {"models": {"flow-reflow": {"family": "flow",
                                                                          "distill": {"source": "flow"}}},
                                              "active_models": ["flow-reflow"]})
    graph = CampaignGraph(config)
    assert graph.base_of("flow-reflow") == graph.distill_source("flow-reflow") == "flow"
    assert graph.trained_models() == {"flow", "flow-reflow"}
    assert set(graph.linked_entries("flow-reflow")) == {"flow-reflow", "flow"}
    assert all(graph.distill_source(m) is None for m in ("flow", "diffusion"))
