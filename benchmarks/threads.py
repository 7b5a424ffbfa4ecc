"""Benchmark: torch threads per training job, alone and beside other work, on this machine.

A training step of the demo-size and the default-size denoiser (flow family) with 1 and 2
intra-op threads: alone; beside a busy process (one core spinning, as when another job
shares the node); and two 1-thread trainings side by side (what `--cores 2` runs when
each job asks for one thread). Prints steps/s per configuration with the hardware.

    python benchmarks/threads.py --train results/demo/data/mp20/train.parquet [--steps 150]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

SIZES = {"demo 64x3, batch 32": (64, 3, 32), "default 128x4, batch 64": (128, 4, 64)}
WARMUP = 5


def worker(args) -> None:
    """Time ``args.steps`` training steps in this process; print steps/s."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from models import training_data

    from onnes.config import validate
    from onnes.models.model import GenerativeModel

    dataset, vocabulary, normalizer = training_data(args.train)
    settings = validate({"models": {"m": {"family": "flow", "denoiser": {"hidden": args.hidden, "layers": args.layers},
                                          "train": {"batch_size": args.batch}}}})["models"]["m"]
    model = GenerativeModel(settings, len(vocabulary), normalizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    for step in range(WARMUP + args.steps):
        if step == WARMUP:
            started = time.perf_counter()
        batch = dataset.batch(rng.choice(len(dataset), args.batch, replace=False), vocabulary)
        loss, _ = model(batch, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    print(f"{args.steps / (time.perf_counter() - started):.2f}")


def launch(args, size: tuple[int, int, int], threads: int) -> subprocess.Popen:
    hidden, layers, batch = size
    command = [sys.executable, __file__, "--worker", "--train", str(args.train), "--steps", str(args.steps),
               "--threads", str(threads), "--hidden", str(hidden), "--layers", str(layers), "--batch", str(batch)]
    env = {"OMP_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)


def rate(process: subprocess.Popen) -> float:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"worker failed ({process.returncode})")
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--hidden", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    print(hardware())
    print(f"training steps/s of the flow model, {args.steps} timed steps after {WARMUP} warm-up steps\n")
    print("| denoiser | 1 thread alone | 2 threads alone | 1 thread + busy core | 2 threads + busy core "
          "| two 1-thread jobs (sum) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, size in SIZES.items():
        alone = {t: rate(launch(args, size, t)) for t in (1, 2)}
        busy_rates = {}
        for t in (1, 2):
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                busy_rates[t] = rate(launch(args, size, t))
            finally:
                spinner.kill()
                spinner.wait()
        pair = [launch(args, size, 1), launch(args, size, 1)]
        together = sum(rate(p) for p in pair)
        print(f"| {label} | {alone[1]:.1f} | {alone[2]:.1f} | {busy_rates[1]:.1f} | {busy_rates[2]:.1f} "
              f"| {together:.1f} |", flush=True)


if __name__ == "__main__":
    main()
