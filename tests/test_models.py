"""Generative models: symmetries of the denoiser, processes, samplers for every family."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from models_fixtures import model_settings, toy_structures

from onnes import crystals
from onnes.models.batch import CrystalDataset, Vocabulary, edges
from onnes.models.lattice import LatticeNormalizer, matrix_from_params, params_from_matrix
from onnes.models.model import GenerativeModel
from onnes.models.processes import (
    Context,
    PROCESSES,
    Masking,
    StepMode,
    WrappedNormalVE,
    _interpolant_coefficients,
    signed_wrap,
    wrap,
)


@pytest.fixture(scope="module")
def dataset():
    structures = toy_structures(12)
    table = crystals.from_structures(structures, [str(i) for i in range(12)], "toy")
    return CrystalDataset.from_table(table)


@pytest.fixture(scope="module")
def vocabulary(dataset):
    return Vocabulary(np.concatenate(dataset.species))


def make_model(family="flow", vocabulary=None, **overrides):
    torch.manual_seed(0)
    return GenerativeModel(model_settings(family, **overrides), len(vocabulary)).eval()


def velocities(model, batch):
    """Auxiliary per-atom state (kldm's velocities) for a batch; None for other families."""
    aux_dim = model.processes["frac"].aux_dim
    if not aux_dim:
        return None
    return torch.randn(len(batch.frac), aux_dim, generator=torch.Generator().manual_seed(7))


def net_outputs(model, batch, frac=None, lattice=None, t=0.4, aux=None):
    """Denoiser outputs on a batch (types as clean one-hot, given coordinates/lattice,
    the frac process's auxiliary state ``aux`` after the coordinates)."""
    lattice = batch.lattice if lattice is None else lattice
    params = model.normalizer.encode(params_from_matrix(lattice, batch.num_atoms))
    types = model._clean_types(batch.types)
    t_vec = torch.full((batch.num_crystals,), t)
    frac = batch.frac if frac is None else frac
    aux = velocities(model, batch) if aux is None else aux
    if aux is not None:
        frac = torch.cat([frac, aux], -1)
    with torch.no_grad():
        return model._net(params, frac, types, t_vec, batch.num_atoms, batch.crystal)


FAMILIES = ["flow", "diffusion", "interpolant", "kldm"]


@pytest.mark.parametrize("family", FAMILIES)
def test_permutation_equivariance(family, dataset, vocabulary):
    model = make_model(family, vocabulary)
    batch = dataset.batch([0, 1, 2], vocabulary)
    # Permute atoms within each crystal (keep crystals contiguous).
    perm, offset = [], 0
    for n in batch.num_atoms.tolist():
        perm += (offset + torch.randperm(n, generator=torch.Generator().manual_seed(n))).tolist()
        offset += n
    perm = torch.tensor(perm)
    permuted = type(batch)(batch.types[perm], batch.frac[perm], batch.lattice, batch.num_atoms, batch.crystal)
    lat, frac, types = net_outputs(model, batch)
    aux = velocities(model, batch)
    lat_p, frac_p, types_p = net_outputs(model, permuted, aux=None if aux is None else aux[perm])
    assert torch.allclose(lat, lat_p, atol=1e-5)
    assert torch.allclose(frac[perm], frac_p, atol=1e-5)
    assert torch.allclose(types[perm], types_p, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_translation_and_integer_shift_invariance(family, dataset, vocabulary):
    model = make_model(family, vocabulary)
    batch = dataset.batch([0, 1, 2, 3], vocabulary)
    reference = net_outputs(model, batch)
    shift = torch.tensor([0.31, -0.17, 0.73])
    translated = net_outputs(model, batch, frac=wrap(batch.frac + shift))
    integers = torch.randint(-3, 4, batch.frac.shape, generator=torch.Generator().manual_seed(1)).float()
    shifted = net_outputs(model, batch, frac=batch.frac + integers)
    for ref, a, b in zip(reference, translated, shifted):
        assert torch.allclose(ref, a, atol=1e-4)
        assert torch.allclose(ref, b, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_rotation_invariance(family, dataset, vocabulary):
    model = make_model(family, vocabulary)
    batch = dataset.batch([0, 1, 2, 3], vocabulary)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(2)))
    rotated = batch.lattice @ q.T  # rotate every lattice vector
    for ref, rot in zip(net_outputs(model, batch), net_outputs(model, batch, lattice=rotated)):
        assert torch.allclose(ref, rot, atol=1e-4)
    # The training loss with the same noise is unchanged by the rotation, too.
    rotated_batch = type(batch)(batch.types, batch.frac, rotated, batch.num_atoms, batch.crystal)
    loss, _ = model.loss(batch, torch.Generator().manual_seed(5))
    loss_rot, _ = model.loss(rotated_batch, torch.Generator().manual_seed(5))
    assert torch.allclose(loss, loss_rot, atol=1e-4)


def test_lattice_parameters_round_trip():
    from pymatgen.core import Lattice

    lattice = Lattice.from_parameters(3.9, 5.1, 7.3, 82.0, 97.0, 111.0)
    matrix = torch.tensor(lattice.matrix, dtype=torch.float64)[None]
    n = torch.tensor([6])
    back = Lattice(matrix_from_params(params_from_matrix(matrix, n), n)[0].numpy())
    assert np.allclose(back.parameters, lattice.parameters, atol=1e-6)
    normalizer = LatticeNormalizer.fit(torch.randn(50, 6) * 2 + 1)
    x = torch.randn(4, 6)
    assert torch.allclose(normalizer.decode(normalizer.encode(x)), x, atol=1e-5)


def test_edges_are_all_pairs_within_crystals():
    src, dst = edges(torch.tensor([1, 3, 2]))
    pairs = set(zip(src.tolist(), dst.tolist()))
    expected = {(i, j) for block in ([0], [1, 2, 3], [4, 5]) for i in block for j in block if i != j}
    assert pairs == expected


def test_wrapped_normal_score_matches_numerical_gradient():
    process = WrappedNormalVE()
    d = torch.linspace(-0.5, 0.49, 41, dtype=torch.float64)
    sigma = torch.full_like(d, 0.3)

    def log_density(x):
        k = torch.arange(-5, 6, dtype=torch.float64)
        return torch.logsumexp(-((x.unsqueeze(-1) + k) ** 2) / (2 * 0.3**2), dim=-1)

    h = 1e-6
    numerical = (log_density(d + h) - log_density(d - h)) / (2 * h)
    assert torch.allclose(process.wrapped_normal_score(d, sigma), numerical, atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "trig", "encoder_decoder", "vp"])
def test_interpolant_endpoints(kind):
    alpha, beta = _interpolant_coefficients(kind)
    zero, one = torch.tensor([0.0]), torch.tensor([1.0])
    assert float(alpha(zero)) == pytest.approx(1.0, abs=1e-2)
    assert float(beta(zero)) == pytest.approx(0.0, abs=1e-2)
    assert float(alpha(one)) == pytest.approx(0.0, abs=1e-2)
    assert float(beta(one)) == pytest.approx(1.0, abs=1e-2)


def test_torus_helpers():
    x = torch.tensor([-0.25, 1.0, 2.3])
    assert torch.allclose(wrap(x), torch.tensor([0.75, 0.0, 0.3]), atol=1e-6)
    assert torch.allclose(signed_wrap(torch.tensor([0.9, -0.7])), torch.tensor([-0.1, 0.3]), atol=1e-6)


def test_torus_flow_scores_the_coordinate_velocity_in_units_of_its_spread():
    """The zero velocity scores 1 - 1/n per coordinate (uniform log map, variance 1/12,
    crystal mean removed), level with the unit-scale lattice and type losses; at 1/12 of
    that the quality preset's flow never left the zero velocity."""
    atoms, crystals = 8, 2000
    gen = torch.Generator().manual_seed(0)
    crystal = torch.arange(crystals).repeat_interleave(atoms)
    f1 = torch.rand(atoms * crystals, 3, generator=gen)
    t = torch.rand(crystals, 1, generator=gen)[crystal]
    process = PROCESSES["torus_flow"]()
    _, target = process.corrupt(f1, t, Context(crystal, crystals), gen)
    zero_velocity = process.loss(torch.zeros_like(target), target, t).mean()
    assert float(zero_velocity) == pytest.approx(1 - 1 / atoms, abs=0.02)
    assert float(process.loss(target, target, t).mean()) == 0.0


def test_masking_reveals_everything_by_the_end():
    process = Masking(num_types=5)
    x = process.prior((7, 5), None, "cpu")
    assert (x == 5).all()
    ctx = Context(torch.zeros(7, dtype=torch.long), 1)
    logits = torch.randn(7, 5)
    steps = 4
    for k in range(steps):
        t = torch.full((7, 1), k / steps)
        x = process.step(x, logits, t, torch.full((7, 1), 1 / steps), ctx, torch.Generator().manual_seed(k))
    assert (x < 5).all()


def test_confident_unmasking_reveals_the_expected_count_most_certain_first():
    process = Masking(num_types=4)
    confident = StepMode(unmasking="confidence")
    crystal = torch.tensor([0] * 6 + [1] * 4)
    ctx = Context(crystal, 2)
    x = process.prior((10, 4), None, "cpu")
    logits = torch.zeros(10, 4)  # uncertain: every type at 1/4
    logits[[0, 9], 0] = 20.0  # atoms 0 and 9 are certain of type 0
    t, dt = torch.full((10, 1), 0.0), torch.full((10, 1), 1 / 6)  # expected reveals: 1 and 2/3 per crystal
    revealed = torch.zeros(10)
    for seed in range(200):
        revealed += (process.step(x, logits, t, dt, ctx, torch.Generator().manual_seed(seed), confident) != 4).float()
    assert revealed[0] == 200 and revealed[1:6].sum() == 0  # exactly one per step, the certain atom
    assert 100 < revealed[9] < 170 and revealed[6:9].sum() == 0  # 2/3 on average, stochastically rounded


def test_stratified_unmasking_reveals_round_n_t_of_each_crystal_one_atom_a_step():
    process, steps = Masking(num_types=3), 16
    sizes = [1, 3, 7, 16, 20]
    crystal = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    ctx, x = Context(crystal, len(sizes)), process.prior((len(crystal), 3), None, "cpu")
    gen, sizes_t = torch.Generator().manual_seed(0), torch.tensor(sizes)
    for k in range(steps):
        t, dt = torch.full((len(crystal), 1), k / steps), torch.full((len(crystal), 1), 1 / steps)
        before = torch.bincount(crystal[x != 3], minlength=len(sizes))
        x = process.step(x, torch.randn(len(crystal), 3), t, dt, ctx, gen, StepMode(unmasking="stratified"))
        after = torch.bincount(crystal[x != 3], minlength=len(sizes))
        assert torch.equal(after, torch.floor(sizes_t * (k + 1) / steps + 0.5).long())
        assert ((after - before) <= torch.ceil(sizes_t / steps)).all()  # one a step while n <= steps
    assert (x != 3).all()


def test_stratified_unmasking_draws_the_exact_joint_law_where_random_reveals_do_not():
    """A law with a known answer: every atom of a 4-atom crystal has the same type, one
    of 3 at random. The exact denoiser predicts the type of a revealed neighbour, else
    each type at 1/3. Revealed one at a time (4 steps), every crystal comes out of one
    type; the exact reverse process's random reveals draw atoms revealed in the same
    step independently and mix types."""
    process, n, crystals, steps = Masking(num_types=3), 4, 3000, 4
    crystal = torch.arange(crystals).repeat_interleave(n)
    ctx = Context(crystal, crystals)

    def exact_logits(x):
        revealed = (x != 3).float()
        seen = torch.zeros(crystals, 3).index_add_(0, crystal, F.one_hot(x.clamp(max=2), 3) * revealed[:, None])
        return torch.where(seen[crystal] > 0, 0.0, -1e9).where(seen[crystal].sum(1, keepdim=True) > 0, 0.0)

    mixed = {}
    for order in ("stratified", "random"):
        x, gen = process.prior((len(crystal), 3), None, "cpu"), torch.Generator().manual_seed(1)
        for k in range(steps):
            t, dt = torch.full((len(crystal), 1), k / steps), torch.full((len(crystal), 1), 1 / steps)
            x = process.step(x, exact_logits(x), t, dt, ctx, gen, StepMode(unmasking=order))
        kinds = x.view(crystals, n)
        mixed[order] = (kinds != kinds[:, :1]).any(1).float().mean().item()
        assert torch.bincount(kinds[:, 0], minlength=3).min() > crystals / 3 - 150  # each type about 1/3
    assert mixed["stratified"] == 0.0
    assert mixed["random"] > 0.2


def test_type_temperature_sharpens_draws():
    logits = torch.log(torch.tensor([[0.6, 0.4]])).expand(4000, 2)
    ctx = Context(torch.zeros(4000, dtype=torch.long), 1)
    t, dt = torch.zeros(4000, 1), torch.ones(4000, 1)
    shares = []
    for temperature in (1.0, 0.25):
        x = Masking(2).prior((4000, 2), None, "cpu")
        drawn = Masking(2).step(x, logits, t, dt, ctx, torch.Generator().manual_seed(0), StepMode(temperature=temperature))
        shares.append((drawn == 0).float().mean().item())
    assert abs(shares[0] - 0.6) < 0.03 and shares[1] > 0.8  # 0.6^4 / (0.6^4 + 0.4^4) = 0.84


@pytest.mark.parametrize("family", FAMILIES)
def test_composition_pooling_and_element_features_keep_the_symmetries(family, dataset, vocabulary):
    model = make_model(family, vocabulary, denoiser={"composition": True, "element_features": True})
    model.set_vocabulary(vocabulary.atomic_numbers)
    assert model.denoiser.elements.abs().sum() > 0
    batch = dataset.batch([0, 1, 2], vocabulary)
    perm = torch.cat([torch.randperm(int(n), generator=torch.Generator().manual_seed(2)) + int(o)
                      for n, o in zip(batch.num_atoms, torch.cumsum(batch.num_atoms, 0) - batch.num_atoms)])
    permuted = type(batch)(batch.types[perm], batch.frac[perm], batch.lattice, batch.num_atoms, batch.crystal)
    lat, frac, types = net_outputs(model, batch)
    aux = velocities(model, batch)
    lat_p, frac_p, types_p = net_outputs(model, permuted, aux=None if aux is None else aux[perm])
    assert torch.allclose(lat, lat_p, atol=1e-5) and torch.allclose(types[perm], types_p, atol=1e-5)
    shifted = net_outputs(model, batch, frac=wrap(batch.frac + torch.tensor([0.2, 0.4, -0.1])))
    assert torch.allclose(types, shifted[2], atol=1e-4)


def test_element_features_carry_oxidation_states():
    from onnes.models.elements import OXIDATION_STATES, element_features

    features = element_features([8, 11, 17])  # O, Na, Cl
    states = features[:, 5:]
    assert states[0, OXIDATION_STATES.index(-2)] == 1 and states[1, OXIDATION_STATES.index(1)] == 1
    assert states[2, OXIDATION_STATES.index(-1)] == 1 and features[1, 4] == 1  # Na is a metal
    assert np.isfinite(element_features([2, 10, 18])).all()  # noble gases: no electronegativity


CASES = [
    ("flow", {}),
    ("flow", {"types": "masked"}),
    ("flow", {"types": "masked", "denoiser": {"composition": True},
              "sample": {"unmasking": "confidence", "type_temperature": 0.8}}),
    ("flow", {"sample": {"heun": True}}),
    ("diffusion", {}),
    ("interpolant", {}),
    ("interpolant", {"interpolant": {"kind": "trig", "gamma": "bridge"}, "sample": {"sampler": "sde", "noise": 0.1}}),
    ("interpolant", {"interpolant": {"kind": "encoder_decoder", "gamma": "sin2", "gamma_scale": 0.5}}),
    ("interpolant", {"interpolant": {"kind": "vp"}, "types": "masked"}),
    ("kldm", {}),
    ("kldm", {"types": "continuous", "sample": {"corrector_steps": 0}}),
    ("kldm", {"sample": {"sampler": "ode", "heun": True, "corrector_steps": 0}}),
    ("kldm", {"processes": {"frac": {"simplified": False, "initial_velocity_scale": 0.5,
                                     "zero_net_velocity": False}}}),
]


@pytest.mark.parametrize("family, overrides", CASES)
def test_every_family_trains_a_step_and_samples(family, overrides, dataset, vocabulary):
    model = make_model(family, vocabulary, **overrides).train()
    loss, parts = model.loss(dataset.batch(range(8), vocabulary), torch.Generator().manual_seed(0))
    loss.backward()
    assert math.isfinite(loss.item()) and set(parts) == {"loss_lattice", "loss_frac", "loss_types"}
    assert all(p.grad is not None for p in model.denoiser.parameters() if p.requires_grad)
    num_atoms = torch.tensor([3, 5, 8])
    types, frac, lattice = model.eval().sample(num_atoms, steps=5, gen=torch.Generator().manual_seed(1))
    assert types.shape == (16,) and frac.shape == (16, 3) and lattice.shape == (3, 3, 3)
    assert ((types >= 0) & (types < len(vocabulary))).all()
    assert ((frac >= 0) & (frac < 1)).all()
    assert torch.isfinite(lattice).all()


@pytest.mark.parametrize("family", ["flow", "kldm"])
def test_structure_prediction_keeps_the_composition(family, dataset, vocabulary):
    model = make_model(family, vocabulary)
    batch = dataset.batch([0, 1], vocabulary)
    types, _, _ = model.sample(batch.num_atoms, steps=4, gen=torch.Generator().manual_seed(0),
                               fixed_types=batch.types)
    assert torch.equal(types, batch.types)


@pytest.mark.parametrize("family", ["flow", "kldm"])
def test_classifier_free_guidance_changes_samples(family, dataset, vocabulary):
    model = make_model(family, vocabulary, conditioning={"columns": ["tc_K"]})
    num_atoms = torch.tensor([4, 4])
    cond = torch.tensor([[30.0], [30.0]])
    plain = model.sample(num_atoms, 4, torch.Generator().manual_seed(0), cond=cond, guidance=1.0)
    guided = model.sample(num_atoms, 4, torch.Generator().manual_seed(0), cond=cond, guidance=3.0)
    assert not torch.allclose(plain[2], guided[2])


def test_the_family_registry_is_the_schema_enum_and_holds_each_family_default():
    from onnes.config import load_schema
    from onnes.models.families import FAMILIES, Family, SamplingPlan

    assert sorted(FAMILIES) == sorted(load_schema()["$defs"]["model"]["properties"]["family"]["enum"])
    for name, record in FAMILIES.items():  # every named process is registered
        assert set(record.processes.values()) <= set(PROCESSES), name
    assert SamplingPlan.of("kldm", {}) == SamplingPlan(sampler="sde", steps=1000)
    assert SamplingPlan.of("flow", {"steps": None}) == SamplingPlan(sampler="ode", steps=100)
    assert SamplingPlan.of("diffusion", {"sampler": None}).steps == 1000
    with pytest.raises(ValueError, match="one process per modality"):
        Family("half", {"lattice": "linear_flow", "frac": "torus_flow"})
    with pytest.raises(ValueError, match="Heun"):
        SamplingPlan.of("interpolant", {"sampler": "sde", "heun": True})
    with pytest.raises(ValueError, match="unmasking"):
        SamplingPlan.of("flow", {"unmasking": "leftmost"})
    with pytest.raises(ValueError, match="unknown family 'vae'"):
        SamplingPlan.of("vae", {})


def test_sampling_settings_reach_the_type_process_only_through_the_step_mode(vocabulary):
    model = make_model("flow", vocabulary, sample={"unmasking": "confidence", "type_temperature": 0.8,
                                                   "sampler": "ode", "noise": 0.3})
    before = dict(vars(model.processes["types"]))
    sampler = model.sampler()
    assert vars(model.processes["types"]) == before  # nothing written onto the process
    assert sampler.mode == StepMode(stochastic=False, noise=0.0, temperature=0.8, unmasking="confidence")
    plan = model.sampling_plan({**model.settings["sample"], "sampler": "sde", "noise": 0.3})
    with pytest.raises(ValueError, match="no stochastic sampler"):  # flow paths have no SDE form
        model.sampler(plan)
