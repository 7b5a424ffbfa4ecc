"""Shared fixtures: small hand-made crystals and CIFs (good and bad), and the mirror."""

from __future__ import annotations

import copy
import json
import os
import re
import warnings
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

REPO = Path(__file__).resolve().parents[1]

# The suite runs in two pytest-xdist workers (pyproject.toml: -n 2 --dist loadgroup): one
# runs the demo campaign, whose jobs keep the cores only about half busy, while the other
# runs the rest beside it. One BLAS/OpenMP thread per process: a two-thread process beside
# a busy core slows 3-4x (docs/results/slurm.md); stages set their own thread counts.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Fixtures that stand up the demo campaign or the test SLURM cluster: every test using
# one runs in the same worker, so each is built once and never twice at a time.
DEMO_FIXTURES = {"demo_run", "slurm_cluster"}
DEMO_GROUP = "demo"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Put the demo's tests in one xdist group. --dist loadgroup sends a group to one
    worker by the "@group" suffix of the test ids; pytest-xdist 3.8 adds it by setting
    ``item._nodeid``, which pytest 9.2 no longer reads (its id is ``item._id``), so the
    suffix is set here and checked: a demo split across workers would run it twice."""
    grouped = getattr(config.option, "loadgroup", False)
    for item in items:
        if not DEMO_FIXTURES & set(getattr(item, "fixturenames", ())):
            continue
        item.add_marker(pytest.mark.xdist_group(DEMO_GROUP))
        if grouped and hasattr(item, "_id"):  # older pytest: xdist's own hook adds the suffix
            from _pytest.nodeid import coerce_node_id

            suffixed = f"{item.nodeid}@{DEMO_GROUP}"
            item._id = coerce_node_id(suffixed)
            assert item.nodeid == suffixed, f"could not put {item.nodeid} in the xdist group '{DEMO_GROUP}'"


def mirror_dir() -> Path | None:
    """The public data mirror: $ONNES_DATA_MIRROR, else ../shared/data beside the repo."""
    candidate = Path(os.environ.get("ONNES_DATA_MIRROR", REPO.parent / "shared" / "data"))
    return candidate if candidate.is_dir() else None


def stage_json(rule: str, overrides: dict | None = None, **wildcards: str) -> str:
    """A rule's ``--settings`` as the workflow builds it: the rule's slice of the config
    ``overrides`` makes (defaults filled), so a stage gets every key it reads."""
    from onnes import config as cfg
    from onnes.stage_settings import stage_settings

    return json.dumps(stage_settings(cfg.validate(copy.deepcopy(overrides or {})), rule, **wildcards))


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip a test whose system tool is missing, except in CI ($ONNES_CI, set by .ci/run),
    where a missing tool means the install step broke and must not pass unnoticed."""
    if os.environ.get("ONNES_CI"):
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = mirror_dir()
    if path is None:
        pytest.skip("no data mirror: set ONNES_DATA_MIRROR or place the mirror at ../shared/data")
    return path


def rocksalt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def silicon() -> Structure:
    return Structure(Lattice.cubic(5.43), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]]).get_primitive_structure()


def perovskite() -> Structure:
    return Structure(
        Lattice.cubic(3.9),
        ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )


def to_cif(structure: Structure) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return structure.to(fmt="cif")


def set_cell_length(cif: str, value: str) -> str:
    return re.sub(r"_cell_length_a\s+\S+", f"_cell_length_a   {value}", cif)


def bad_cifs() -> dict[str, str]:
    """One CIF per drop reason that parsing must detect, keyed by the expected reason."""
    good = to_cif(perovskite())
    disordered = perovskite()
    disordered.replace(0, {"Sr": 0.5, "Ba": 0.5})
    too_close = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    return {
        "parse_error": good[: len(good) // 3],  # truncated
        "unknown_element": good.replace("  Ti  Ti1", "  Xx  Xx1"),
        "non_finite_lattice": set_cell_length(good, "nan"),
        "degenerate_cell": set_cell_length(good, "0.0"),
        "partial_occupancy": to_cif(disordered),
        "overlapping_atoms": to_cif(too_close),
    }


@pytest.fixture
def good_structures() -> dict[str, Structure]:
    return {"NaCl": rocksalt(), "Si": silicon(), "SrTiO3": perovskite()}


def write_user_files(folder: Path, structures: dict[str, Structure]) -> Path:
    """A user's folder: the structures as CIF files named by key, plus one broken file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, structure in structures.items():
        (folder / f"{name}.cif").write_text(to_cif(structure))
    (folder / "broken.cif").write_text("data_broken\n_cell_length_a 3.0\n")
    return folder


def user_campaign(base_config: Path, workdir: Path) -> Path:
    """``base_config`` plus a user data set (models may train on it) and a candidate
    source, both folders of CIFs under ``workdir``; returns the config file written."""
    import yaml

    structures = {"nacl": rocksalt(), "si": silicon(), "srtio3": perovskite()}
    write_user_files(workdir / "my_data", structures)
    write_user_files(workdir / "collaborator", {f"{k}-x": s for k, s in structures.items()})
    config = yaml.safe_load(base_config.read_text())
    config["data"]["custom"] = {"mine": {"path": str(workdir / "my_data")}}
    config["candidates"] = {"collab": {"path": [str(workdir / "collaborator" / "*.cif")], "dataset": "mine"}}
    path = workdir / "user.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
