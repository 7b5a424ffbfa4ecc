"""A user's own crystals -> a crystal table, every record kept or dropped with a reason.

``onnes data import`` reads CIF, POSCAR/CONTCAR, extended XYZ, ASE databases and
pymatgen JSON from files, folders and globs. Each structure found becomes a record that
goes through curation's own parsing and checks (``parse.parse_record``,
``parse.check_structure``) and, unless switched off, its StructureMatcher de-duplication,
so "a sane crystal" means the same here as for the public data sets. A file that cannot be
read at all counts as one dropped record (``parse_error``) under the file's name.

Labels (e.g. ``tc_K``, ``e_form_per_atom``) come from the files' own fields (extxyz
``info``, ASE database key-value pairs, pymatgen ``properties``) and from a side CSV with
an ``id`` column; the CSV wins where both give a value.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from onnes.config import ConfigError, allowed_elements, dataset_settings
from onnes.crystals import REQUIRED_COLUMNS
from onnes.data.curate import Curated, deduplicate, drop_repeated_ids, parse_all, report_counts
from onnes.data.parse import Checks, Rejected

log = logging.getLogger(__name__)

FORMATS = ("cif", "poscar", "extxyz", "ase-db", "pymatgen-json")
# Columns a label may not overwrite: the contract and what curation derives.
RESERVED_COLUMNS = (*REQUIRED_COLUMNS, "file", "num_sites", "formula", "num_elements", "volume_per_atom",
                    "drop_reason", "drop_detail")


class ImportInputError(ConfigError):
    """Inputs that name nothing importable, or a malformed label file (a user error: the
    CLI prints it and exits with status 2, like a config error)."""


@dataclass(frozen=True)
class ImportSettings:
    checks: Checks
    fmt: str = "auto"
    source: str = "user"
    dedup: dict | None = None  # curation's dedup settings; None keeps duplicates
    workers: int = 1


def detect_format(path: Path) -> str | None:
    """The format a file name implies, or None for files that are none of ours."""
    name = path.name.lower()
    if name.endswith(".cif"):
        return "cif"
    if name.startswith(("poscar", "contcar")) or name.endswith((".vasp", ".poscar")):
        return "poscar"
    if name.endswith((".extxyz", ".xyz")):
        return "extxyz"
    if name.endswith(".db"):
        return "ase-db"
    if name.endswith((".json", ".json.gz")):
        return "pymatgen-json"
    return None


def find_files(inputs: Sequence[str | Path], fmt: str = "auto") -> list[Path]:
    """Files named by ``inputs``: files as given, folders searched recursively for files of
    a known format (or of ``fmt``), globs expanded. Each input must name something."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            hits = sorted(p for p in path.rglob("*") if p.is_file() and _wanted(p, fmt))
            if not hits:
                raise ImportInputError(f"{path}: a folder without files of a known format {FORMATS}")
        elif path.is_file():
            hits = [path]
        else:
            hits = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
            if not hits:
                raise ImportInputError(f"{item}: no such file or folder, and no file matches it as a glob")
        found += [p for p in hits if p not in found]
    return found


def _wanted(path: Path, fmt: str) -> bool:
    detected = detect_format(path)
    return detected is not None and (fmt == "auto" or detected == fmt)


# -- readers: one file -> records -----------------------------------------------------


def _record(rid: str, path: Path, settings: ImportSettings, **content) -> dict:
    return {"id": rid, "source": settings.source, "extra": {"file": str(path)}, "labels": {}, **content}


def _unreadable(path: Path, settings: ImportSettings, exc: Exception) -> dict:
    reason = "unknown_element" if _names_an_unknown_element(exc) else "parse_error"
    return _record(path.name, path, settings, error=Rejected(reason, f"{path.name}: {type(exc).__name__}: {exc}"))


def _names_an_unknown_element(exc: Exception) -> bool:
    """ASE and pymatgen report an unknown symbol as KeyError('Xx') or 'not a valid Element'."""
    text = str(exc)
    if isinstance(exc, KeyError):
        from pymatgen.core.periodic_table import Element

        symbol = text.strip("'\"")
        return symbol.isalpha() and len(symbol) <= 3 and not Element.is_valid_symbol(symbol)
    return "valid element" in text.lower() or "invalid element" in text.lower()


def _cif_records(path: Path, settings: ImportSettings) -> Iterator[dict]:
    """One record per data block; the id is the file stem (with the block name if several)."""
    from pymatgen.io.cif import CifFile

    text = path.read_text(errors="replace")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks = CifFile.from_str(text).data
    except Exception:
        blocks = {}
    if len(blocks) <= 1:  # parse_record classifies whatever is wrong with it
        yield _record(path.stem, path, settings, cif=text)
        return
    for name, block in blocks.items():
        yield _record(f"{path.stem}:{name}", path, settings, cif=str(block))


def _ase_records(path: Path, settings: ImportSettings, fmt: str) -> Iterator[dict]:
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    ase_format = {"poscar": "vasp", "extxyz": "extxyz"}[fmt]
    frames = read(str(path), index=":", format=ase_format)
    single = len(frames) == 1
    for index, atoms in enumerate(frames):
        info = dict(atoms.info)
        rid = str(info.pop("id", None) or info.pop("name", None) or (path.stem if single else f"{path.stem}:{index}"))
        record = _record(rid, path, settings, labels=_scalar_labels(info))
        yield _with_structure(record, lambda: AseAtomsAdaptor.get_structure(atoms))


def _ase_db_records(path: Path, settings: ImportSettings) -> Iterator[dict]:
    from ase.db import connect
    from pymatgen.io.ase import AseAtomsAdaptor

    with connect(str(path), type="db") as db:
        rows = list(db.select())
    for row in rows:
        pairs = dict(row.key_value_pairs)
        rid = str(pairs.pop("id", None) or pairs.pop("name", None) or f"{path.stem}:{row.id}")
        record = _record(rid, path, settings, labels=_scalar_labels(pairs))
        yield _with_structure(record, lambda: AseAtomsAdaptor.get_structure(row.toatoms()))


def _pymatgen_json_records(path: Path, settings: ImportSettings) -> Iterator[dict]:
    """A Structure's ``as_dict()``, a list of them, or an object mapping ids to them."""
    from monty.io import zopen
    from pymatgen.core import Structure

    with zopen(str(path), "rt") as handle:
        data = json.load(handle)
    if isinstance(data, dict) and "lattice" in data and "sites" in data:
        items = [(path.stem, data)]
    elif isinstance(data, list):
        items = [(f"{path.stem}:{i}", d) for i, d in enumerate(data)]
    elif isinstance(data, dict):
        items = list(data.items())
    else:
        raise ValueError("expected a pymatgen Structure dict, a list of them, or an object of them")
    for rid, item in items:
        properties = item.get("properties", {}) if isinstance(item, dict) else {}
        record = _record(str(rid), path, settings, labels=_scalar_labels(properties))
        yield _with_structure(record, lambda: Structure.from_dict(item))


def _with_structure(record: dict, build) -> dict:
    try:
        return {**record, "structure": build()}
    except Exception as exc:
        reason = "unknown_element" if _names_an_unknown_element(exc) else "parse_error"
        return {**record, "error": Rejected(reason, f"{type(exc).__name__}: {exc}")}


def _scalar_labels(fields: dict) -> dict:
    """Numbers, booleans and strings of a file's own fields, under their own names."""
    labels = {}
    for key, value in fields.items():
        if key in RESERVED_COLUMNS or not isinstance(key, str):
            continue
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()
        if isinstance(value, (bool, int, float, str)):
            labels[key] = value
    return labels


def read_file(path: Path, settings: ImportSettings) -> list[dict]:
    """All records of one file; a file no reader can open is one dropped record."""
    fmt = settings.fmt if settings.fmt != "auto" else detect_format(path)
    try:
        if fmt == "cif":
            return list(_cif_records(path, settings))
        if fmt in ("poscar", "extxyz"):
            return list(_ase_records(path, settings, fmt))
        if fmt == "ase-db":
            return list(_ase_db_records(path, settings))
        if fmt == "pymatgen-json":
            return list(_pymatgen_json_records(path, settings))
        raise ValueError(f"no format recognised from the file name; pass one of {FORMATS}")
    except Exception as exc:  # an unreadable file is a counted drop, never a crash
        return [_unreadable(path, settings, exc)]


# -- labels from a side CSV -------------------------------------------------------------


def read_label_csv(path: str | Path) -> pd.DataFrame:
    try:
        labels = pd.read_csv(path)
    except Exception as exc:
        raise ImportInputError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    if "id" not in labels.columns:
        raise ImportInputError(f"{path}: a label file needs an 'id' column (columns: {list(labels.columns)})")
    reserved = sorted(set(labels.columns) & (set(RESERVED_COLUMNS) - {"id"}))
    if reserved:
        raise ImportInputError(f"{path}: label columns {reserved} would overwrite crystal-table columns")
    labels["id"] = labels["id"].astype(str)
    repeated = labels["id"][labels["id"].duplicated()].unique().tolist()
    if repeated:
        raise ImportInputError(f"{path}: ids listed more than once: {repeated[:5]}")
    return labels.set_index("id")


def _apply_labels(records: list[dict], labels: pd.DataFrame) -> None:
    for record in records:
        if record["id"] in labels.index:
            row = labels.loc[record["id"]]
            record["labels"].update({k: _plain(v) for k, v in row.items() if not _missing(v)})


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# -- the whole import -------------------------------------------------------------------


@dataclass(frozen=True)
class ImportJob:
    inputs: list[str]
    settings: ImportSettings
    labels: str | None


def import_job(config: dict, *, inputs: Sequence[str] = (), dataset: str | None = None,
               candidates: str | None = None, source: str = "user", fmt: str | None = None,
               labels: str | None = None, max_atoms: int | None = None, keep_duplicates: bool = False,
               workers: int = 1) -> ImportJob:
    """What to import and how, from the validated config: a user data set
    (``data.custom.<dataset>``: de-duplicated like curation), a candidate source
    (``candidates.<candidates>``: duplicates kept for the funnel's uniqueness step), or
    plain ``inputs``; explicit arguments win over the entry's keys."""
    data = config["data"]
    entry: dict = {}
    if dataset:
        entry, source = dataset_settings(data, dataset), dataset
    elif candidates:
        if candidates not in config["candidates"]:
            raise ConfigError(f"no candidate source '{candidates}' under config key 'candidates'")
        entry, source, keep_duplicates = config["candidates"][candidates], candidates, True
    paths = list(inputs) or entry.get("path")
    if not paths:
        raise ImportInputError("name files, folders or globs to import (or a data set / candidate source)")
    checks = Checks(allowed_elements=allowed_elements(data), max_atoms=max_atoms or entry.get("max_atoms", 200),
                    min_distance=data["min_distance"], min_volume=data["min_volume"],
                    max_volume_per_atom=data["max_volume_per_atom"])
    dedup = None if keep_duplicates or not data["dedup"]["enabled"] else data["dedup"]
    settings = ImportSettings(checks=checks, fmt=fmt or entry.get("format", "auto"), source=source, dedup=dedup,
                              workers=workers)
    return ImportJob([paths] if isinstance(paths, str) else list(paths), settings, labels or entry.get("labels"))


def import_structures(inputs: Sequence[str | Path], settings: ImportSettings,
                      label_csv: str | Path | None = None) -> Curated:
    """Kept rows (a crystal table), dropped rows with reasons, and a report that counts both."""
    started = time.perf_counter()
    labels = read_label_csv(label_csv) if label_csv else None
    files = find_files(inputs, settings.fmt)
    records = [record for path in files for record in read_file(path, settings)]
    if labels is not None:
        _apply_labels(records, labels)
    records_in = len(records)
    records, dropped_rows = drop_repeated_ids(records)
    parsed = parse_all(records, settings.checks, settings.workers)
    kept = pd.DataFrame([row for row in parsed if "drop_reason" not in row])
    dropped_rows += [row for row in parsed if "drop_reason" in row]
    if settings.dedup and len(kept):
        kept, duplicates = deduplicate(kept, settings.dedup, settings.workers)
        dropped_rows += duplicates
    if kept.empty:
        kept = pd.DataFrame(columns=[*REQUIRED_COLUMNS, "file"])
    dropped = pd.DataFrame(dropped_rows, columns=["id", "source", "file", "drop_reason", "drop_detail"])
    report = report_counts(settings.source, records_in, kept, dropped, settings.workers)
    report["files"] = len(files)
    report["labels"] = _label_report(kept, labels)
    report["timing_s"] = {"total": round(time.perf_counter() - started, 2)}
    report["settings"] = {"format": settings.fmt, "max_atoms": settings.checks.max_atoms,
                          "min_distance": settings.checks.min_distance, "min_volume": settings.checks.min_volume,
                          "max_volume_per_atom": settings.checks.max_volume_per_atom, "dedup": settings.dedup}
    return Curated(kept, dropped, report)


def _label_report(kept: pd.DataFrame, labels: pd.DataFrame | None) -> dict:
    columns = [c for c in kept.columns if c not in RESERVED_COLUMNS]
    report: dict[str, Any] = {"columns": {c: int(kept[c].notna().sum()) for c in columns}}
    if labels is not None:
        unmatched = sorted(set(labels.index) - set(kept["id"]))
        report["csv_rows_without_a_kept_structure"] = len(unmatched)
        report["csv_unmatched_ids"] = unmatched[:20]
    return report
