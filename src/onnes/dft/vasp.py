"""VASP through atomate2's Materials Project makers (the cluster default).

The flow is MP's GGA(+U) double relaxation followed by a static
(``MPGGADoubleRelaxStaticMaker``), run under custodian with atomate2's VASP error
handlers, so that energies are on the footing of MP's hull after the MP2020
corrections. POTCARs come from the user's pymatgen setup (``PMG_VASP_PSP_DIR``); where
there is none, the written inputs carry ``POTCAR.spec`` (the POTCAR symbols) instead.
"""

from __future__ import annotations

from pathlib import Path

from pymatgen.core import Structure

from onnes.dft.settings import DftSettings


def potcars_available() -> bool:
    from pymatgen.core import SETTINGS

    psp_dir = SETTINGS.get("PMG_VASP_PSP_DIR")
    return bool(psp_dir) and Path(psp_dir).is_dir()


def make_flow(structure: Structure, settings: DftSettings):
    from atomate2.vasp.flows.mp import MPGGADoubleRelaxStaticMaker
    from atomate2.vasp.powerups import update_user_incar_settings

    flow = MPGGADoubleRelaxStaticMaker().make(structure)
    run_kwargs = {"vasp_cmd": settings.vasp["command"],
                  "max_errors": settings.vasp["custodian_max_errors"]}
    for job in _jobs(flow):
        job.maker.run_vasp_kwargs.update(run_kwargs)
    if settings.vasp["incar"]:
        flow = update_user_incar_settings(flow, settings.vasp["incar"])
    return flow


def _jobs(flow):
    for item in flow.jobs:
        if hasattr(item, "jobs"):
            yield from _jobs(item)
        else:
            yield item


def job_makers(flow) -> list[tuple[str, object]]:
    """(job name, maker) of every VASP job in the flow, in run order."""
    return [(job.name, job.maker) for job in _jobs(flow)]


def write_inputs(flow, structure: Structure, directory: str | Path) -> list[Path]:
    """Write each job's complete VASP input deck (INCAR, KPOINTS, POSCAR, POTCAR or
    POTCAR.spec) under ``directory/{index}-{job name}/``. Later jobs take their
    structure from earlier outputs at run time; here they are previewed on the input
    structure, which is what a cluster user checks before submitting."""
    directory = Path(directory)
    spec = not potcars_available()
    written = []
    for index, (name, maker) in enumerate(job_makers(flow)):
        target = directory / f"{index}-{name.replace(' ', '_')}"
        input_set = maker.input_set_generator.get_input_set(structure, potcar_spec=spec)
        input_set.write_input(target)
        written.append(target)
    return written
