"""Benchmark: fetch (from a mirror) and curate every data set; print a table with the hardware.

    python benchmarks/curate_all.py --mirror ../shared/data [--workers 2] [--out DIR]

Prints records in / kept / dropped by reason and wall time per data set. No assertions:
the goal (all mirror data sets in under 10 minutes on 2 cores) is read off the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from onnes.config import validate
from onnes.data.curate import curate
from onnes.data.fetch import fetch
from onnes.catalogue import DATASET_FILES


def hardware() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}; {os.cpu_count()} cores visible; {memory:.0f} GiB RAM; Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--datasets", nargs="+", default=["mp20", "mpts52", "wbm", "3dsc", "supercon"])
    args = parser.parse_args()
    data_config = validate({})["data"]
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        for dataset in args.datasets:
            t0 = time.perf_counter()
            for path in DATASET_FILES[dataset]:
                fetch(path, cache, args.mirror)
            result = curate(dataset, cache, data_config, workers=args.workers)
            rows.append((dataset, result.report, time.perf_counter() - t0))
    total = time.perf_counter() - started
    print(f"hardware: {hardware()}; workers per data set: {args.workers}")
    print("| data set | records in | kept | dropped (by reason) | Tc labelled | wall s |")
    print("|---|---:|---:|---|---:|---:|")
    for dataset, report, seconds in rows:
        dropped = ", ".join(f"{k} {v}" for k, v in report["dropped"].items()) or "-"
        tc = report.get("tc", {}).get("labelled", "")
        print(f"| {dataset} | {report['records_in']} | {report['kept']} | {dropped} | {tc} | {seconds:.1f} |")
    print(f"| total | {sum(r['records_in'] for _, r, _ in rows)} | {sum(r['kept'] for _, r, _ in rows)} "
          f"| | | {total:.1f} |")


if __name__ == "__main__":
    main()
