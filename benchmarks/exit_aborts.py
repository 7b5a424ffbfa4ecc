"""Loop: run a short `onnes relax` job (and optionally `onnes screen match`) many times,
alone or beside a busy core, and count the runs that do not exit 0, the abort at exit
that once failed a demo campaign ("terminate called without an active exception",
status 134) in particular. Each run is a fresh interpreter, as a Snakemake job is.

    python benchmarks/exit_aborts.py --table results/demo/screen/flow/matched.parquet --runs 100 [--load]

``--load`` keeps the other core busy with a second process multiplying matrices in torch.
Prints the hardware, the counts and the log tail of every failed run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

from onnes.config import validate  # noqa: E402
from onnes.stage_settings import stage_settings  # noqa: E402

BUSY = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a = (a @ a).tanh()\n"


def relax_command(table: Path, out: Path) -> list[str]:
    relax = {"select": "novel", "max_structures": 4, "max_steps": 20, "shards": 2, "threads": 1}
    campaign = validate({"relax": relax})
    return ["onnes", "relax", "--table", str(table), "--out", str(out), "--shard", "0",
            "--settings", json.dumps(stage_settings(campaign, "relax_shard"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True, help="a screened table (screen/<source>/matched.parquet)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--load", action="store_true", help="keep the other core busy")
    args = parser.parse_args()
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if args.load else None
    failures, started = [], time.perf_counter()
    try:
        for run in range(args.runs):
            with tempfile.TemporaryDirectory() as work:
                done = subprocess.run(relax_command(args.table, Path(work) / "0.parquet"), capture_output=True,
                                      text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
                complete = (Path(work) / "0.parquet").exists()
            if done.returncode != 0:
                failures.append((run, done.returncode, complete, done.stderr[-2000:]))
    finally:
        if busy:
            busy.kill()
    seconds = time.perf_counter() - started
    print(f"hardware: {hardware()}")
    print(f"{args.runs} runs of `onnes relax` (4 structures, 20 steps) {'beside a busy core' if args.load else 'alone'}"
          f" in {seconds:.0f} s: {len(failures)} non-zero exits")
    for run, code, complete, tail in failures:
        print(f"--- run {run}: exit {code}, output {'written' if complete else 'missing'}\n{tail}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
