"""What a reader needs to reproduce a campaign: the config, the code (git commit and
package versions), the data (sha256 of every raw file), the seeds and the hardware."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from onnes.baselines import baseline_seed
from onnes.data.fetch import sha256_file
from onnes.train.loop import derive_seed

PACKAGES = ["onnes", "torch", "snakemake", "snakemake-executor-plugin-slurm", "pymatgen", "chgnet", "atomate2",
            "jobflow", "custodian", "ase", "numpy", "pandas", "scikit-learn", "lightgbm", "matminer", "smact",
            "pyxtal", "matplotlib"]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


NOT_A_CHECKOUT = "not a git checkout"


def git_state(repo: str | Path) -> dict[str, str | bool]:
    """HEAD commit of the project's own checkout and whether its tracked files differ
    from it. A project exported into another repository's tree (or not under git at
    all) says "not a git checkout": git would otherwise walk up and report the
    enclosing repository's commit."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    try:
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
        if top != Path(repo).resolve():
            return {"commit": NOT_A_CHECKOUT, "dirty": False}
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": NOT_A_CHECKOUT, "dirty": False}
    return {"commit": commit, "dirty": dirty}


def data_checksums(paths: list[str | Path], root: str | Path) -> dict[str, str]:
    """sha256 of each raw file, keyed by its path relative to the data cache."""
    root = Path(root)
    return {str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else str(p): sha256_file(p)
            for p in sorted(paths, key=str)}


def seeds(config: dict) -> dict[str, int]:
    """The campaign seed and those derived from it (same derivation as the stages)."""
    out = {"campaign": config["seed"]}
    for name in config.get("active_models") or list(config["models"]):
        entry = config["models"][name]
        if not entry.get("weights_from"):
            out[f"train {name}"] = derive_seed(config["seed"], name)
        if entry.get("distill", {}).get("source"):  # the same derivation as onnes.sampling.sample_pairs
            out[f"reflow pairs {name}"] = derive_seed(config["seed"], name, "reflow-pairs")
        for shard in range(entry["sample"]["shards"]):
            out[f"sample {name} shard {shard}"] = derive_seed(config["seed"], name, "sample", shard)
    for name in config.get("active_baselines", []):
        out[f"baseline {name}"] = baseline_seed(name, config["seed"])
    return out


def hardware() -> dict[str, str | int]:
    """Where the report was written; each stage's log names its own device."""
    info: dict[str, str | int] = {"machine": platform.machine(), "system": platform.platform(),
                                  "cpus": os.cpu_count() or 0}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    try:
        import torch

        info["gpus"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "none"
    except Exception:  # noqa: BLE001 - a broken CUDA install must not stop the report
        info["gpus"] = "unknown"
    slurm_job = os.environ.get("SLURM_JOB_ID")
    if slurm_job:
        info["slurm_job"] = slurm_job
    return info
