"""Run one candidate's DFT flow with jobflow's ``run_locally`` inside its Snakemake job.

Each attempt runs in a fresh directory. A job that raises (custodian gave up, CP2K
aborted, SCF or geometry unconverged) is caught by jobflow; its traceback is taken from
jobflow's log and recorded with the custodian corrections that were tried. A failed
attempt is retried up to ``dft.retries`` times; the record keeps every attempt's error.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import shutil
import time
from pathlib import Path

from onnes.crystals import to_structure
from onnes.dft.results import MP_COMPATIBLE_CODES, structure_change, task_fields
from onnes.dft.settings import DftSettings
from onnes.dft.store import open_store

log = logging.getLogger(__name__)

UNCONVERGED_MARK = "did not converge"


class _JobErrors(logging.Handler):
    """Collects the 'failed with exception' records jobflow logs for failed jobs."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "failed with exception" in message:
            self.messages.append(message)


@contextlib.contextmanager
def _capture_job_errors():
    handler = _JobErrors()
    # run_locally(log=True) replaces the handlers of the "jobflow" logger itself, so
    # listen on the child logger that reports job failures.
    logger = logging.getLogger("jobflow.managers.local")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _last_line(traceback_text: str) -> str:
    lines = [line.strip() for line in traceback_text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else traceback_text


def _read_text(path: Path) -> str:
    """A job file, plain or gzipped (atomate2 compresses a finished job's directory)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", errors="replace") as handle:
            return handle.read()
    return path.read_text(errors="replace")


def _custodian_corrections(directory: Path) -> list[str]:
    """Names of the custodian handlers that fired in any job directory of an attempt."""
    names = []
    for path in sorted(directory.rglob("custodian.json*")):
        try:
            runs = json.loads(_read_text(path))
        except (OSError, ValueError):
            continue
        for run in runs:
            for correction in run.get("corrections", []):
                handler = (correction.get("handler") or {}).get("@class", "?")
                names.append(handler)
    return names


def _cp2k_abort_message(directory: Path) -> str | None:
    """The text of CP2K's [ABORT] box, if a calculation in the attempt aborted."""
    for path in sorted(directory.rglob("cp2k.out*")):
        lines = _read_text(path).splitlines()
        for index, line in enumerate(lines):
            if "[ABORT]" in line:
                box = lines[index:index + 8]
                text = " ".join(part.strip(" *|/\\_O") for part in box).replace("[ABORT]", "")
                words = [w for w in text.split() if not w.endswith((".F:", ".F")) and ".F:" not in w]
                return "CP2K aborted: " + " ".join(words)
    return None


def build_flow(structure, settings: DftSettings, cp2k_data_dir=None):
    if settings.code == "cp2k":
        from onnes.dft import cp2k

        return cp2k.make_flow(structure, settings, cp2k_data_dir)
    from onnes.dft import vasp

    return vasp.make_flow(structure, settings)


def _attempt(flow, store, directory: Path) -> tuple[object | None, str | None]:
    from jobflow import run_locally

    with _capture_job_errors() as errors:
        responses = run_locally(flow, store=store, create_folders=True, root_dir=str(directory),
                                log=True)
    final = flow.jobs[-1]
    if final.uuid in responses and not errors:
        store.connect()
        return store.get_output(final.uuid, load=True), None
    error = _last_line(errors[-1]) if errors else "flow stopped before its last job ran"
    return None, error


def _status(error: str) -> str:
    return "unconverged" if UNCONVERGED_MARK in error else "failed"


def run_candidate(row, settings: DftSettings, work_dir: str | Path, cp2k_data_dir=None) -> dict:
    """Run (or, for VASP with ``dft.vasp.inputs_only``, write) one candidate's flow and
    return its record for ``dft.parquet``."""
    from onnes.io import write_json

    work_dir = Path(work_dir).resolve()  # run_locally changes into job directories
    structure = to_structure(row)
    record = {"id": row["id"], "dft_code": settings.code, "dft_calculation": settings.calculation,
              "dft_status": None, "dft_error": None, "dft_attempts": 0, "dft_errors": []}
    if settings.code == "vasp" and settings.vasp["inputs_only"]:
        from onnes.dft import vasp

        flow = build_flow(structure, settings)
        inputs = work_dir / "inputs"
        shutil.rmtree(inputs, ignore_errors=True)
        written = vasp.write_inputs(flow, structure, inputs)
        write_json(work_dir / "flow.json", flow.as_dict())
        record.update(dft_status="inputs_written", dft_dir=str(inputs),
                      dft_jobs=[p.name for p in written])
        return record

    store = open_store(settings.store, work_dir / "store")
    for attempt in range(settings.retries + 1):
        directory = work_dir / f"attempt-{attempt}"
        shutil.rmtree(directory, ignore_errors=True)  # a killed earlier run restarts clean
        started = time.perf_counter()
        try:
            flow = build_flow(structure, settings, cp2k_data_dir)
            write_json(directory / "flow.json", flow.as_dict())
            task, error = _attempt(flow, store, directory)
        except Exception as exc:  # noqa: BLE001 -- recorded, never lost (input generation)
            task, error = None, f"{type(exc).__name__}: {exc}"
        record["dft_attempts"] = attempt + 1
        record["dft_seconds"] = time.perf_counter() - started
        if task is not None:
            fields, relaxed = task_fields(task)
            record.update(fields)
            record.update(structure_change(structure, relaxed))
            record.update(dft_status="success", dft_error=None)
            return record
        abort = _cp2k_abort_message(directory) if directory.exists() else None
        if abort:
            error = f"{error} ({abort})"
        corrections = _custodian_corrections(directory) if directory.exists() else []
        if corrections:
            error = f"{error} [custodian corrections: {', '.join(corrections)}]"
        log.warning("%s attempt %d failed: %s", row["id"], attempt + 1, error)
        record["dft_errors"].append(error)
        record.update(dft_status=_status(error), dft_error=error)
    return record


def run_slot(candidates, slot: int, settings: DftSettings, work_root: str | Path, threads: int,
             cp2k_data_dir=None, launcher: str | None = None, hull=None, known=None) -> dict:
    """One DFT job of the workflow: the candidate given ``slot`` by the selection, run in
    ``work_root/{source}/{id}/`` (the output layout, docs/architecture.md); a slot without
    a candidate records ``no_candidate``. With ``hull`` and ``known`` (crystals by id,
    :func:`onnes.dft.local_hull.known_by_id`), a code off the MP footing also computes the
    candidate's decomposition products (``dft.local_hull``). Sets this process's environment for the code:
    OpenMP threads, and for a one-rank CP2K no SLURM/PMI variables (docs/guide/slurm.md, "Running on a
    SLURM cluster")."""
    import os

    settings = settings.with_launcher(launcher)
    if settings.code == "cp2k" and not launcher:
        from onnes.dft.cp2k import singleton_environment

        clean = singleton_environment(os.environ)
        os.environ.clear()
        os.environ.update(clean)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    chosen = candidates[candidates.dft_slot == slot]
    if chosen.empty:
        return {"dft_slot": slot, "dft_status": "no_candidate"}
    row = chosen.iloc[0]
    work_dir = Path(work_root) / str(row["source"]) / str(row["id"])
    record = run_candidate(row, settings, work_dir, cp2k_data_dir)
    if (record["dft_status"] == "success" and settings.local_hull and settings.code not in MP_COMPATIBLE_CODES
            and hull is not None and known is not None):
        from onnes.dft.local_hull import local_hull

        record.update(local_hull(row, record, settings, work_dir.resolve(), hull, known, run_candidate,
                                 cp2k_data_dir))
    record["dft_slot"] = slot
    return record
