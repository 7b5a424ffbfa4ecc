"""The sampling stage: load a trained model, draw structures in shards, gather them.

Each shard has its own seed derived from (campaign seed, model, shard), so shards are
reproducible and independent; each is written atomically as a crystal table. For de
novo generation the number of atoms of each crystal is drawn from the training
distribution; for structure prediction the composition is given.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from onnes.config import fill_model_defaults
from onnes.crystals import read_table, write_table
from onnes.models.batch import Vocabulary
from onnes.models.families import SamplingPlan
from onnes.models.model import GenerativeModel
from onnes.train import checkpoint
from onnes.train.loop import derive_seed

log = logging.getLogger(__name__)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[GenerativeModel, dict]:
    """The EMA model of a checkpoint, with the settings it was trained with (sampling
    settings are passed to generation as a ``SamplingPlan``, never merged into them)."""
    state = checkpoint.load(path, map_location=device)
    vocabulary = state["vocabulary"]
    # A checkpoint written before a setting existed gets the schema's default for it, but
    # the architecture it was trained with: composition pooling and element descriptors
    # did not exist then.
    legacy = {"composition": False, "element_features": False}
    settings = fill_model_defaults({**state["settings"], "denoiser": {**legacy, **state["settings"]["denoiser"]}})
    model = GenerativeModel(settings, len(vocabulary))
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval(), state


def sampling_of(model: GenerativeModel, settings: dict | None) -> tuple[dict, SamplingPlan]:
    """(the ``sample`` block, its plan) that generation uses: the current config entry's
    ``settings`` when given (sampling knobs change without retraining), else the
    checkpoint's own."""
    sample = settings["sample"] if settings else model.settings["sample"]
    return sample, model.sampling_plan(sample)


def shard_sizes(total: int, shards: int) -> list[int]:
    base, extra = divmod(total, shards)
    return [base + (1 if i < extra else 0) for i in range(shards)]


def draw_num_atoms(histogram: list[list[int]], count: int, rng: np.random.Generator) -> np.ndarray:
    sizes = np.array([n for n, _ in histogram])
    weights = np.array([c for _, c in histogram], dtype=float)
    return rng.choice(sizes, size=count, p=weights / weights.sum())


def composition_cells(formula: str, formula_units: list[int], count: int, rng: np.random.Generator,
                      vocabulary: Vocabulary) -> list[np.ndarray]:
    """Type indices of ``count`` cells of ``formula`` x (a random choice of formula units)."""
    from pymatgen.core import Composition

    composition = Composition(formula)
    if any(not float(x).is_integer() for x in composition.values()):
        raise ValueError(f"composition '{formula}' must have integer amounts for structure prediction")
    unit = np.concatenate([[el.Z] * int(x) for el, x in composition.items()])
    types = vocabulary.encode(unit)  # raises for an element the model never saw
    return [np.tile(types, int(z)) for z in rng.choice(formula_units, size=count)]


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sample_shard(model_path: str | Path, shard: int, out_path: str | Path, seed: int, settings: dict | None = None,
                 cond_value: list[float] | None = None, name: str | None = None) -> dict:
    """Generate shard ``shard`` of the model's sample budget and write it to ``out_path``.

    ``settings`` (the model's current config entry) overrides the sampling settings
    stored in the checkpoint, so sampling knobs change without retraining. ``name``
    (default: the checkpoint's model) labels the rows and seeds the shard: a config
    entry with ``weights_from`` samples another model's weights under its own name.
    """
    device = _resolve_device((settings or {}).get("sample", {}).get("device", "auto"))
    model, state = load_model(model_path, device)
    sample_cfg, plan = sampling_of(model, settings)
    torch.set_num_threads(sample_cfg["threads"])
    name = name or state["model_name"]
    count = shard_sizes(sample_cfg["num_samples"], sample_cfg["shards"])[shard]
    shard_seed = derive_seed(seed, name, "sample", shard)
    rng = np.random.default_rng(shard_seed)
    gen = torch.Generator(device=device).manual_seed(shard_seed)
    vocabulary = Vocabulary(state["vocabulary"])
    allowed = allowed_type_mask(sample_cfg.get("elements"), vocabulary, device)
    cond_value = sample_cfg.get("target") if cond_value is None else cond_value
    if cond_value is not None and len(cond_value) != len(model.settings["conditioning"]["columns"]):
        raise ValueError(f"sample.target has {len(cond_value)} values; the model is conditioned on "
                         f"{model.settings['conditioning']['columns']}")
    if sample_cfg["composition"]:
        cells = composition_cells(sample_cfg["composition"], sample_cfg["formula_units"], count, rng, vocabulary)
        num_atoms = np.array([len(c) for c in cells])
    else:
        cells, num_atoms = None, draw_num_atoms(state["num_atoms_histogram"], count, rng)
    rows, started = [], time.perf_counter()
    for start, (types, frac, lattice, sizes) in _generate(model, sample_cfg, plan, num_atoms, cells, gen, device,
                                                           cond_value, f"sample {name}[{shard}]", allowed):
        rows += _rows(types, frac, lattice, sizes, vocabulary, name, shard, start)
    seconds = time.perf_counter() - started
    table = pd.DataFrame(rows, columns=ROW_COLUMNS)  # an empty shard (more shards than samples) keeps them
    write_table(table, out_path)
    rate = count / max(seconds, 1e-9)
    log.info("%s shard %d: %d structures in %.1f s (%.1f structures/s, %d steps, %s)", name, shard, count,
             seconds, rate, plan.steps, device)
    return {"count": count, "seconds": seconds, "structures_per_s": rate, "steps": plan.steps}


def sample_pairs(model_path: str | Path, out_path: str | Path, seed: int, source_settings: dict,
                 distill: dict, name: str) -> dict:
    """Reflow's training pairs for model ``name`` (``distill``: its config entry's
    ``distill`` block): ``distill['pairs']`` crystals the source checkpoint's ODE draws
    (``source_settings``: the source's config entry; ``teacher_steps`` steps, default
    the source's own), each with the prior point it came from (``onnes.train.reflow``)."""
    from onnes.train.reflow import make_pairs

    sample_cfg = source_settings["sample"]
    device = _resolve_device(sample_cfg.get("device", "auto"))
    model, state = load_model(model_path, device)
    torch.set_num_threads(sample_cfg["threads"])
    teacher = {**sample_cfg, "steps": distill["teacher_steps"] or sample_cfg["steps"]}
    _, plan = sampling_of(model, {"sample": teacher})
    pair_seed = derive_seed(seed, name, "reflow-pairs")
    num_atoms = draw_num_atoms(state["num_atoms_histogram"], distill["pairs"], np.random.default_rng(pair_seed))
    gen = torch.Generator(device=device).manual_seed(pair_seed)
    started = time.perf_counter()
    pairs = make_pairs(model, plan, num_atoms, sample_cfg["batch_size"], gen, device, f"reflow pairs {name}")
    seconds = time.perf_counter() - started
    pairs.save(out_path)
    return {"pairs": len(pairs), "seconds": seconds, "teacher_steps": plan.steps}


def allowed_type_mask(symbols: list[str] | None, vocabulary: Vocabulary, device) -> torch.Tensor | None:
    """(num_types,) bool mask of the elements sampling may use; None for all."""
    if not symbols:
        return None
    from pymatgen.core import Element

    unknown = [s for s in symbols if not Element.is_valid_symbol(s)]
    if unknown:
        raise ValueError(f"sample.elements: unknown element symbols {unknown}")
    known = set(vocabulary.atomic_numbers.tolist())
    usable = [Element(s).Z for s in symbols if Element(s).Z in known]
    if len(usable) < len(symbols):
        log.warning("sample.elements: %s never seen in training; left out",
                    sorted(s for s in symbols if Element(s).Z not in known))
    if not usable:
        raise ValueError(f"sample.elements: none of {symbols} is in the model's vocabulary")
    mask = torch.zeros(len(vocabulary), dtype=torch.bool, device=device)
    mask[torch.as_tensor(vocabulary.encode(np.array(usable)), device=device)] = True
    return mask


def _generate(model, sample_cfg: dict, plan: SamplingPlan, num_atoms: np.ndarray, cells: list[np.ndarray] | None,
              gen, device, cond_value: list[float] | None, label: str, allowed: torch.Tensor | None = None):
    """Yield (start, (types, frac, lattice, sizes) as arrays) batch by batch."""
    sampler = model.sampler(plan)
    for start in tqdm(range(0, len(num_atoms), sample_cfg["batch_size"]), desc=label, mininterval=5):
        stop = start + sample_cfg["batch_size"]
        sizes = torch.as_tensor(num_atoms[start:stop], device=device)
        cond = None
        if cond_value is not None:
            cond = torch.tensor(cond_value, dtype=torch.float32, device=device).expand(len(sizes), -1)
        fixed = None if cells is None else torch.as_tensor(np.concatenate(cells[start:stop]), device=device)
        types, frac, lattice = model.sample(sizes, plan.steps, gen, sampler=sampler, cond=cond,
                                            guidance=sample_cfg["guidance"], fixed_types=fixed,
                                            allowed_types=allowed)
        yield start, (types.cpu().numpy(), frac.cpu().numpy(), lattice.cpu().numpy(), sizes.cpu().numpy())


def sample_csp(model_path: str | Path, reference: pd.DataFrame, count: int, out_path: str | Path, seed: int,
               settings: dict | None = None, name: str | None = None) -> pd.DataFrame:
    """Crystal structure prediction for the first ``count`` reference rows (in a seeded
    order): one structure generated with each row's composition and atom count.
    ``target_id`` names the row; compositions with elements the model never saw are
    left out (logged)."""
    device = _resolve_device((settings or {}).get("sample", {}).get("device", "auto"))
    model, state = load_model(model_path, device)
    sample_cfg, plan = sampling_of(model, settings)
    torch.set_num_threads(sample_cfg["threads"])
    vocabulary = Vocabulary(state["vocabulary"])
    name = name or state["model_name"]
    order = np.random.default_rng(derive_seed(seed, name, "csp", 0)).permutation(len(reference))
    targets, cells = [], []
    for index in order[:count]:
        row = reference.iloc[int(index)]
        try:
            cells.append(vocabulary.encode(np.asarray(row["species"])))
            targets.append(row["id"])
        except (KeyError, ValueError):
            log.warning("structure prediction: %s has an element outside the model's vocabulary", row["id"])
    gen = torch.Generator(device=device).manual_seed(derive_seed(seed, name, "csp", 1))
    num_atoms = np.array([len(c) for c in cells], dtype=np.int64)
    rows = []
    for start, arrays in _generate(model, sample_cfg, plan, num_atoms, cells, gen, device, None, f"csp {name}"):
        rows += _rows(*arrays, vocabulary, f"{name}-csp", 0, start)
    table = pd.DataFrame(rows)
    table["target_id"] = targets[:len(table)]
    write_table(table, out_path)
    return table


ROW_COLUMNS = ["id", "species", "frac_coords", "lattice", "source", "num_sites"]


def _rows(types, frac, lattice, sizes, vocabulary, name, shard, start):
    rows, offset = [], 0
    species = vocabulary.decode(types)
    for k, n in enumerate(sizes):
        n = int(n)
        rows.append({
            "id": f"{name}-{shard}-{start + k}",
            "species": species[offset:offset + n].tolist(),
            "frac_coords": frac[offset:offset + n].reshape(-1).tolist(),
            "lattice": lattice[k].reshape(-1).tolist(),
            "source": name,
            "num_sites": n,
        })
        offset += n
    return rows


def gather(shard_paths: list[str | Path], out_path: str | Path, summary_path: str | Path) -> dict:
    """Concatenate shards into one crystal table; summarise count and structural validity."""
    from onnes.io import write_json
    from onnes.screen.validity import structural_validity

    table = pd.concat([read_table(p) for p in shard_paths], ignore_index=True)
    validity = structural_validity(table)
    summary = {
        "count": len(table),
        "shards": len(shard_paths),
        "valid_struct_fraction": float(validity.valid_struct.mean()) if len(table) else 0.0,
        "mean_num_sites": float(table.num_sites.mean()) if len(table) else 0.0,
    }
    write_table(table, out_path)
    write_json(summary_path, summary)
    return summary
