"""The training loop: one command for a CPU laptop and for N GPUs on M nodes.

- data order and noise are functions of (seed, step, rank) alone, so a run killed and
  resumed from its checkpoint replays exactly the batches and noise it would have seen;
- AdamW, linear warm-up then cosine decay, gradient clipping, EMA weights (sampling and
  validation use them), bf16 autocast on GPUs;
- metrics to CSV (and TensorBoard when installed), a progress bar;
- resumable state every ``checkpoint_every`` steps in ``{out}/resume/`` (not a Snakemake
  output, so it survives a failed job); the final EMA model goes to ``{out}/last.ckpt``;
- SIGTERM/SIGUSR1 (preemption, SLURM time limit) save the state and exit with
  ``EXIT_RESUME`` so the scheduler can requeue the job, which then resumes.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import signal
import time
import zlib
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from onnes.crystals import read_table
from onnes.io import atomic_path
from onnes.models.batch import Coupling, CrystalBatch, CrystalDataset, Vocabulary
from onnes.models.families import FAMILIES, MODALITIES
from onnes.models.lattice import LatticeNormalizer, params_from_matrix
from onnes.models.model import GenerativeModel, count_parameters
from onnes.train import checkpoint
from onnes.train.distributed import Runtime, all_reduce_mean, barrier, setup, teardown
from onnes.train.reflow import PairSet, with_data

log = logging.getLogger(__name__)
EXIT_RESUME = 75  # EX_TEMPFAIL: interrupted, state saved, run again to resume
# The logged losses: the weighted total, then one per modality (the parts GenerativeModel.loss returns).
LOSS_KEYS = ("loss", *(f"loss_{modality}" for modality in MODALITIES))
METRIC_COLUMNS = ["step", "epoch", *LOSS_KEYS, "lr", "grad_norm", "steps_per_s", "val_loss"]


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from any parts, stable across Python processes (no hash salt)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


class BatchOrder:
    """Global batch indices of step s: epoch e = s // steps_per_epoch shuffles with seed (seed, e)."""

    def __init__(self, size: int, batch_size: int, seed: int):
        if size == 0:
            raise ValueError("no training structures")
        self.size, self.batch_size, self.seed = size, min(batch_size, size), seed
        self.steps_per_epoch = max(1, size // self.batch_size)
        self._epoch, self._perm = -1, None

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def indices(self, step: int) -> np.ndarray:
        epoch = self.epoch(step)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            self._epoch = epoch
        k = step % self.steps_per_epoch
        return self._perm[k * self.batch_size:(k + 1) * self.batch_size]


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - self.decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)


def lr_lambda(warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


# Settings a run may change and still resume: the length of training and bookkeeping.
_RESUMABLE_CHANGES = {"steps", "log_every", "val_every", "val_batches", "checkpoint_every", "threads", "device",
                      "gpus", "nodes"}


def settings_fingerprint(settings: dict) -> str:
    """What must match for a saved state to be resumed (architecture, data, optimiser...)."""
    relevant = {k: v for k, v in settings.items() if k != "sample"}
    relevant["train"] = {k: v for k, v in settings["train"].items() if k not in _RESUMABLE_CHANGES}
    return json.dumps(relevant, sort_keys=True)


def _within_vocabulary(dataset: CrystalDataset, vocabulary: Vocabulary, label: str) -> CrystalDataset:
    known = set(vocabulary.atomic_numbers.tolist())
    keep = [i for i, s in enumerate(dataset.species) if set(s.tolist()) <= known]
    if len(keep) < len(dataset):
        log.info("%s: %d of %d structures have elements outside the vocabulary; left out", label,
                 len(dataset) - len(keep), len(dataset))
    return CrystalDataset([dataset.species[i] for i in keep], [dataset.frac[i] for i in keep],
                          dataset.lattice[keep], None if dataset.cond is None else dataset.cond[keep])


def prepare_data(settings: dict, train_path: str | Path, val_path: str | Path,
                 vocabulary: Vocabulary | None = None):
    """Datasets, vocabulary, lattice normaliser and atom-count histogram. A given
    ``vocabulary`` (a pretrained base's) is kept; structures outside it are left out."""
    cond = settings["conditioning"]["columns"]
    train_table, val_table = read_table(train_path), read_table(val_path)
    if cond and settings.get("reward", {}).get("source"):
        # Generated samples carry no measured label; a reward fine-tune drops every
        # condition (p_uncond 1), so a placeholder stands in.
        train_table, val_table = (t.assign(**{c: 0.0 for c in cond if c not in t}) for t in (train_table, val_table))
    if cond:  # a conditional model trains on labelled structures only
        train_table, val_table = train_table.dropna(subset=cond), val_table.dropna(subset=cond)
    train = CrystalDataset.from_table(train_table, settings["max_atoms"], cond)
    val = CrystalDataset.from_table(val_table, settings["max_atoms"], cond)
    if vocabulary is None:
        vocabulary = Vocabulary(np.concatenate(train.species))
    else:
        train = _within_vocabulary(train, vocabulary, "train")
    val = _within_vocabulary(val, vocabulary, "val")
    if len(train) == 0:
        raise ValueError(f"{train_path}: no training structures left (max_atoms, labels, vocabulary)")
    num_atoms = torch.tensor([len(s) for s in train.species])
    normalizer = LatticeNormalizer.fit(params_from_matrix(torch.from_numpy(train.lattice).float(), num_atoms))
    counts = np.bincount(num_atoms.numpy())
    histogram = [[int(n), int(c)] for n, c in enumerate(counts) if c]
    return train, val, vocabulary, normalizer, histogram


class _StopFlag:
    def __init__(self):
        self.signal: int | None = None

    def __call__(self, signum, frame):
        self.signal = signum


def _install_signal_handlers(flag: _StopFlag) -> None:
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        try:
            signal.signal(sig, flag)
        except ValueError:  # not the main thread (e.g. inside some test runners)
            pass


def training_batch(dataset, indices, vocabulary, device) -> tuple[CrystalBatch, Coupling | None]:
    """Batch ``indices`` of a data set (no coupling) or of reflow pairs (with theirs), on ``device``."""
    batch = dataset.batch(indices, vocabulary)
    batch, coupling = batch if isinstance(batch, tuple) else (batch, None)
    return batch.to(device), None if coupling is None else coupling.to(device)


@torch.no_grad()
def evaluate(model: GenerativeModel, val: CrystalDataset, vocabulary, settings, runtime: Runtime, seed: int) -> float:
    batch_size = settings["train"]["batch_size"]
    total, count = 0.0, 0
    for b in range(settings["train"]["val_batches"]):
        idx = np.arange(b * batch_size, min(len(val), (b + 1) * batch_size))
        if len(idx) == 0:
            break
        batch, coupling = training_batch(val, idx, vocabulary, runtime.device)
        gen = torch.Generator(device=runtime.device).manual_seed(derive_seed(seed, "val", b))
        loss, _ = model.loss(batch, gen, coupling)
        total, count = total + float(loss) * len(idx), count + len(idx)
    return total / max(count, 1)


def _write_metrics(rows: list[dict], path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _read_metrics(path: Path, up_to_step: int) -> list[dict]:
    if not path.exists():
        return []
    table = pd.read_csv(path)
    table = table[table.step <= up_to_step].astype(object).where(table.notna(), "")
    return table.to_dict("records")


# Keys that define a network's architecture: a fine-tune inherits them from its base
# (with every config block a family shares among its processes, e.g. the interpolant's).
ARCHITECTURE_KEYS = ("family", "types", "processes", "denoiser",
                     *sorted({f.shared[0] for f in FAMILIES.values() if f.shared}))


def check_source(key: str, settings: dict, source_settings: dict, unconditional: bool = False) -> None:
    """The model a training starts from (named by config ``key``) must be of this
    model's family and, with ``unconditional``, have no conditioning of its own."""
    if settings["family"] != source_settings["family"]:
        raise ValueError(f"{key} is a {source_settings['family']} model; this model says family "
                         f"{settings['family']}: they must agree")
    if unconditional and source_settings["conditioning"]["columns"]:
        raise ValueError(f"{key} must be an unconditional model")


def adapter_settings(settings: dict, base_settings: dict) -> dict:
    """An adapter fine-tune's settings with its base model's architecture."""
    check_source("adapter.base", settings, base_settings, unconditional=True)
    return {**settings, **{k: base_settings[k] for k in ARCHITECTURE_KEYS if k in base_settings}}


def reward_settings(settings: dict, source_settings: dict) -> dict:
    """A reward fine-tune's settings: the source's architecture, conditioning and
    adapters. A conditional source trains through its unconditional branch only
    (p_uncond 1), which is the branch the fine-tune is sampled with."""
    check_source("reward.source", settings, source_settings)
    inherited = {k: source_settings[k] for k in (*ARCHITECTURE_KEYS, "adapter") if k in source_settings}
    conditioning = {**source_settings["conditioning"]}
    if conditioning["columns"]:
        conditioning["p_uncond"] = 1.0
    return {**settings, **inherited, "conditioning": conditioning, "reward": settings["reward"]}


def distill_settings(settings: dict, source_settings: dict) -> dict:
    """A distilled model's settings: its source's architecture (it starts from every
    source weight); its own training and sampling settings."""
    check_source("distill.source", settings, source_settings, unconditional=True)
    return {**settings, **{k: source_settings[k] for k in ARCHITECTURE_KEYS if k in source_settings},
            "conditioning": source_settings["conditioning"]}


def split_pairs(pairs: PairSet, val_fraction: float, seed: int) -> tuple[PairSet, PairSet]:
    """(training, validation) pairs: a seeded ``val_fraction`` held out (at least one of each)."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    held = min(max(1, round(val_fraction * len(pairs))), len(pairs) - 1)
    if held < 1:
        raise ValueError(f"reflow needs at least 2 pairs, got {len(pairs)}")
    return pairs.subset(np.sort(order[held:])), pairs.subset(np.sort(order[:held]))


def train(settings: dict, name: str, train_path, val_path, out_dir, seed: int, max_steps: int | None = None,
          base_checkpoint: str | Path | None = None, pairs_path: str | Path | None = None) -> dict:
    """Train model ``name``; resume from ``{out_dir}/resume/state.ckpt`` when present.

    ``max_steps`` stops early (after saving resumable state) without writing last.ckpt:
    used by tests to interrupt a run deterministically. With ``adapter.base`` set,
    ``base_checkpoint`` is that pretrained model: its weights are loaded and, unless
    ``adapter.freeze_base`` is false, frozen so that only the adapters and the condition
    embedding train. With ``distill.source`` set, ``base_checkpoint`` is that model and
    ``pairs_path`` its reflow pairs (``onnes.train.reflow``): every weight starts from
    the source's and trains on the pairs, with ``distill.mix_data`` of each batch drawn
    unpaired from ``train_path`` (unused without it); the validation loss is the
    held-out pairs', not ``val_path``'s.
    """
    tcfg = settings["train"]
    out = Path(out_dir)
    runtime = setup(tcfg["device"])
    torch.set_num_threads(tcfg["threads"])
    model_seed = derive_seed(seed, name)
    torch.manual_seed(model_seed)

    base, data_set = None, None
    adapted, rewarded = settings.get("adapter", {}).get("base"), settings.get("reward", {}).get("source")
    distilled = settings.get("distill", {}).get("source")
    if adapted or rewarded or distilled:
        if base_checkpoint is None:
            key = "adapter.base" if adapted else "reward.source" if rewarded else "distill.source"
            raise ValueError(f"{name}: {key} is set; pass that model's checkpoint")
        base = checkpoint.load(base_checkpoint)
        inherit = distill_settings if distilled else reward_settings if rewarded else adapter_settings
        settings = inherit(settings, base["settings"])
    base_vocabulary = Vocabulary(base["vocabulary"]) if base else None
    if distilled:
        if pairs_path is None:
            raise ValueError(f"{name}: distill.source is set; pass its reflow pairs")
        train_set, val_set = split_pairs(PairSet.load(pairs_path), settings["distill"]["val_fraction"],
                                         derive_seed(seed, name, "pairs"))
        vocabulary, normalizer, histogram = base_vocabulary, None, base["num_atoms_histogram"]
        if settings["distill"]["mix_data"] > 0:  # the source's training split, unpaired rows of every batch
            data_set = prepare_data(settings, train_path, val_path, base_vocabulary)[0]
    else:
        train_set, val_set, vocabulary, normalizer, histogram = prepare_data(settings, train_path, val_path,
                                                                             base_vocabulary)
    model = GenerativeModel(settings, len(vocabulary), normalizer)
    model.set_vocabulary(vocabulary.atomic_numbers)
    if base is not None and (rewarded or distilled):
        model.load_state_dict(base["state_dict"])  # same architecture (normaliser too): every weight, all train
        log.info("%s: %s of %s; all %d parameters trainable", name,
                 "reflow" if distilled else "reward fine-tune", base["model_name"], count_parameters(model))
        if distilled:
            model.check_couples()
    elif base is not None:
        missing, unexpected = model.load_state_dict(base["state_dict"], strict=False)
        if unexpected or any(not k.startswith(("denoiser.adapters", "denoiser.cond_in", "denoiser.null_cond",
                                               "cond_")) for k in missing):
            raise ValueError(f"{base_checkpoint}: does not fit {name}'s architecture "
                             f"(missing {missing}, unexpected {unexpected})")
        if settings["adapter"].get("freeze_base", True):
            trainable = model.freeze_base()
            log.info("%s: adapter fine-tune of %s; %d of %d parameters trainable", name, base["model_name"],
                     trainable, count_parameters(model))
        else:
            log.info("%s: full fine-tune of %s with adapters; all %d parameters trainable", name,
                     base["model_name"], count_parameters(model))
    if settings["conditioning"]["columns"] and not rewarded:  # a reward fine-tune keeps its source's statistics
        model.set_condition_stats(torch.from_numpy(train_set.cond))
    model = model.to(runtime.device)
    ema = EMA(model, tcfg["ema_decay"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tcfg["lr"],
                                  weight_decay=tcfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tcfg["warmup_steps"], tcfg["steps"]))
    state_path, partial_metrics = out / "resume" / "state.ckpt", out / "resume" / "metrics.csv"

    step = 0
    fingerprint = settings_fingerprint(settings)
    state = checkpoint.load(state_path, map_location=runtime.device) if state_path.exists() else None
    if state is not None and state.get("fingerprint") != fingerprint:
        stale = state_path.with_name("state.stale.ckpt")
        if runtime.is_main:
            state_path.replace(stale)
        log.warning("%s: settings changed since %s was saved; starting afresh (old state kept as %s)",
                    name, state_path, stale)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        log.info("%s: resuming from step %d (%s)", name, step, state_path)
    rows = _read_metrics(partial_metrics, step) if runtime.is_main else []

    net = model
    if runtime.world_size > 1:
        # The null-condition embedding is unused in batches where no condition is dropped.
        net = DistributedDataParallel(model, find_unused_parameters=bool(settings["conditioning"]["columns"]))
        # (frozen base parameters of an adapter fine-tune are simply not synchronised)
    use_bf16 = tcfg["precision"] == "bf16" and runtime.device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else nullcontext
    data_rows = 0 if data_set is None else min(round(settings["distill"]["mix_data"] * tcfg["batch_size"]),
                                               tcfg["batch_size"] - 1)
    order = BatchOrder(len(train_set), tcfg["batch_size"] - data_rows, model_seed)
    data_order = BatchOrder(len(data_set), data_rows, derive_seed(model_seed, "data")) if data_rows else None
    stop = _StopFlag()
    _install_signal_handlers(stop)
    writer = _tensorboard(out) if runtime.is_main else None
    if runtime.is_main:
        log.info("%s: %s, %d parameters, %d train / %d val structures, %d ranks on %s", name,
                 settings["family"], count_parameters(model), len(train_set), len(val_set),
                 runtime.world_size, runtime.device)

    def save_state() -> None:
        if runtime.is_main:
            checkpoint.save({"model": model.state_dict(), "ema": ema.model.state_dict(),
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "step": step, "fingerprint": fingerprint}, state_path)
            _write_metrics(rows, partial_metrics)
        barrier(runtime)

    window = dict.fromkeys((*LOSS_KEYS, "grad_norm"), 0.0) | {"n": 0}
    window_start = time.perf_counter()
    end = tcfg["steps"] if max_steps is None else min(tcfg["steps"], max_steps)
    progress = tqdm(total=tcfg["steps"], initial=step, desc=f"train {name}", unit="step",
                    disable=not runtime.is_main, mininterval=5)
    model.train()
    while step < end:
        indices = order.indices(step)[runtime.rank::runtime.world_size]
        batch, coupling = training_batch(train_set, indices, vocabulary, runtime.device)
        if data_order is not None:
            data = data_set.batch(data_order.indices(step)[runtime.rank::runtime.world_size], vocabulary)
            batch, coupling = with_data(batch, coupling, data.to(runtime.device))
        gen = torch.Generator(device=runtime.device).manual_seed(derive_seed(model_seed, step, runtime.rank))
        with autocast():
            loss, parts = net(batch, gen, coupling)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"] or float("inf"))
        optimizer.step()
        scheduler.step()
        ema.update(model)
        step += 1
        progress.update(1)
        # The stop flag rides on the step's all-reduce, so every rank stops at the same step:
        # a rank that stopped alone would wait in save_state's barrier while the others
        # wait in the next step's all-reduce, until the collective timeout.
        values = [float(loss.detach()), *(parts[key] for key in LOSS_KEYS[1:]), float(stop.signal is not None)]
        reduced = all_reduce_mean(torch.tensor(values, device=runtime.device), runtime).tolist()
        stop_now = reduced.pop() > 0
        for key, value in zip(LOSS_KEYS, reduced, strict=True):
            window[key] += value
        window["grad_norm"] += float(grad_norm)
        window["n"] += 1

        if step % tcfg["log_every"] == 0 or step == tcfg["steps"]:
            elapsed = time.perf_counter() - window_start
            row = {k: window[k] / window["n"] for k in (*LOSS_KEYS, "grad_norm")}
            row.update(step=step, epoch=order.epoch(step - 1), lr=scheduler.get_last_lr()[0],
                       steps_per_s=window["n"] / max(elapsed, 1e-9), val_loss="")
            if step % tcfg["val_every"] == 0 or step == tcfg["steps"]:
                row["val_loss"] = evaluate(ema.model, val_set, vocabulary, settings, runtime, model_seed)
            rows.append(row)
            if writer:
                for key, value in row.items():
                    if key != "step" and value != "":
                        writer.add_scalar(key, value, step)
            progress.set_postfix(loss=f"{row['loss']:.3f}")
            window = dict.fromkeys(window, 0.0) | {"n": 0}
            window_start = time.perf_counter()
        if step % tcfg["checkpoint_every"] == 0 and step < tcfg["steps"]:
            save_state()
        if stop_now:
            save_state()
            seen = f"signal {stop.signal}" if stop.signal is not None else "a signal on another rank"
            log.warning("%s: %s at step %d; state saved to %s, exiting %d to be resumed", name, seen, step,
                        state_path, EXIT_RESUME)
            teardown(runtime)
            raise SystemExit(EXIT_RESUME)
    progress.close()

    if step < tcfg["steps"]:  # stopped early on purpose (max_steps)
        save_state()
        teardown(runtime)
        return {"step": step, "finished": False}
    save_state()  # every rank (it synchronises); lets a later run with more steps continue
    if runtime.is_main:
        _write_metrics(rows, out / "metrics.csv")
        checkpoint.save({"model_name": name, "settings": settings, "state_dict": ema.model.state_dict(),
                         "vocabulary": vocabulary.atomic_numbers.tolist(), "num_atoms_histogram": histogram,
                         "step": step, "seed": seed}, out / "last.ckpt")
    teardown(runtime)
    return {"step": step, "finished": True, "rows": rows}


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
