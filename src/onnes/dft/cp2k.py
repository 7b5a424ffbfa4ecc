"""CP2K through atomate2: basis sets and pseudopotentials from Debian's cp2k-data, and
the relax / static makers with the campaign's settings.

pymatgen finds basis sets and GTH pseudopotentials in a per-element YAML directory built
once from CP2K's data files (``pmg config --cp2k``). atomate2's default set names UZH
basis/potential pairs by hash; a configured basis name (e.g. ``DZVP-MOLOPT-SR-GTH``)
is paired here with the GTH-PBE potential of the same valence (``-q{n}``), as CP2K's
MOLOPT basis sets are optimised for exactly that pseudopotential (VandeVondele & Hutter,
J. Chem. Phys. 127, 114105, 2007).
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import tempfile
from pathlib import Path

import yaml
from pymatgen.core import Structure

from onnes.dft.settings import DftSettings

FUNCTIONAL = "PBE"


class UnsupportedElements(ValueError):
    """The configured basis/potential set does not cover an element of the structure."""


def prepare_data_dir(source: str | Path, target: str | Path) -> Path:
    """Build pymatgen's per-element basis/potential directory from CP2K's data files
    (what ``pmg config --cp2k source target`` does), atomically: a killed build leaves
    no directory that later runs would trust."""
    from pymatgen.cli.pmg_config import setup_cp2k_data

    source, target = Path(source), Path(target)
    if not any(source.glob("*BASIS*")) or not any(source.glob("*POTENTIAL*")):
        raise FileNotFoundError(
            f"no CP2K basis/potential files in {source} (install Debian's cp2k-data, or set"
            " dft.cp2k.data_source)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build = staging / "elements"  # setup_cp2k_data prompts if its target exists
        setup_cp2k_data([str(source), str(build)])
        if target.exists():
            shutil.rmtree(target)
        os.replace(build, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=None)
def _element_data(data_dir: str, symbol: str) -> dict:
    path = Path(data_dir) / symbol
    if not path.is_file():
        return {}
    with path.open() as handle:
        return yaml.safe_load(handle) or {}


def _default_pair(symbol: str) -> dict | None:
    from atomate2.cp2k.sets.base import _BASE_CP2K_SET

    entry = _BASE_CP2K_SET["cp2k_input"]["basis_and_potential"].get(symbol) or {}
    if not entry.get("basis") or not entry.get("potential"):
        return None
    return {"basis": entry["basis"], "potential": entry["potential"]}


def _named_pair(data: dict, basis_name: str) -> dict | None:
    for basis_hash, basis in (data.get("basis_sets") or {}).items():
        if basis.get("name") != basis_name:
            continue
        valence = (basis.get("info") or {}).get("electrons")
        for potential_hash, potential in (data.get("potentials") or {}).items():
            if potential.get("name") == f"GTH-{FUNCTIONAL}-q{valence}":
                return {"basis": basis_hash, "potential": potential_hash}
    return None


def basis_and_potential(symbols, data_dir: str | Path, basis_name: str | None) -> dict:
    """{element: {"basis": hash, "potential": hash}} for every element, or
    ``UnsupportedElements`` naming those the set does not cover."""
    pairs, missing = {}, []
    for symbol in sorted(set(symbols)):
        data = _element_data(str(data_dir), symbol)
        pair = _named_pair(data, basis_name) if basis_name else _default_pair(symbol)
        known = pair and pair["basis"] in (data.get("basis_sets") or {}) and pair["potential"] in (
            data.get("potentials") or {})
        if known:
            pairs[symbol] = pair
        else:
            missing.append(symbol)
    if missing:
        label = basis_name or "atomate2's default UZH set"
        raise UnsupportedElements(f"no CP2K basis/pseudopotential for {', '.join(missing)} in {label}")
    return pairs


def _generator_kwargs(structure: Structure, settings: DftSettings, data_dir: str | Path) -> dict:
    from atomate2.cp2k.sets.base import _BASE_CP2K_SET

    cp2k = settings.cp2k
    config_dict = copy.deepcopy(_BASE_CP2K_SET)
    config_dict["cp2k_input"]["basis_and_potential"] = basis_and_potential(
        structure.symbol_set, data_dir, cp2k["basis"])
    return {
        "config_dict": config_dict,
        "user_input_settings": {
            "cutoff": cp2k["cutoff"],
            "rel_cutoff": cp2k["rel_cutoff"],
            "max_scf": cp2k["max_scf"],
            "eps_scf": cp2k["eps_scf"],
            "xc_functionals": [FUNCTIONAL],
        },
        "user_kpoints_settings": {"reciprocal_density": cp2k["kpoint_density"]},
    }


def make_flow(structure: Structure, settings: DftSettings, data_dir: str | Path):
    """A jobflow Flow: a static single point, or a fixed-cell relaxation followed by a
    static on the relaxed geometry. Unconverged SCF or geometry raises in the job (and
    is recorded by the runner) instead of passing silently to the next job."""
    from atomate2.cp2k.jobs.core import RelaxMaker, StaticMaker
    from atomate2.cp2k.sets.core import RelaxSetGenerator, StaticSetGenerator
    from jobflow import Flow

    from pymatgen.core import SETTINGS

    # pymatgen reads these once at import; its SETTINGS mapping is what DftSet consults.
    SETTINGS["PMG_CP2K_DATA_DIR"] = str(Path(data_dir).resolve())
    SETTINGS["PMG_DEFAULT_CP2K_FUNCTIONAL"] = FUNCTIONAL
    kwargs = _generator_kwargs(structure, settings, data_dir)
    common = {
        "run_cp2k_kwargs": {"cp2k_cmd": settings.cp2k["command"],
                            "max_errors": settings.cp2k["custodian_max_errors"]},
        "stop_children_kwargs": {"handle_unsuccessful": "error"},
    }
    static_maker = StaticMaker(input_set_generator=StaticSetGenerator(**kwargs), **common)
    if settings.calculation == "static":
        return Flow([static_maker.make(structure)], name="cp2k static")
    relax_kwargs = copy.deepcopy(kwargs)
    relax_kwargs["user_input_settings"]["activate_motion"] = {
        "max_iter": settings.cp2k["max_relax_steps"], "optimizer": "BFGS", "trust_radius": 0.1}
    relax = RelaxMaker(input_set_generator=RelaxSetGenerator(**relax_kwargs), **common).make(structure)
    static = static_maker.make(relax.output.structure)
    return Flow([relax, static], output=static.output, name="cp2k relax + static")


# Variables by which Open MPI recognises a launch by srun (srun sets SLURM_STEP_*; PMI
# and PMIx variables come with srun's MPI plugins).
SRUN_VARIABLE_PREFIXES = ("SLURM_", "PMI_", "PMIX_")


def singleton_environment(environ: dict) -> dict:
    """The environment for a one-rank CP2K inside a SLURM job step, without the step's
    variables. Debian's Open MPI is built without SLURM PMI support: seeing them, a
    cp2k.psmp started without a launcher aborts in MPI_Init ("OMPI was not built with
    SLURM's PMI support"); without them it starts as an MPI singleton."""
    return {k: v for k, v in environ.items() if not k.startswith(SRUN_VARIABLE_PREFIXES)}
