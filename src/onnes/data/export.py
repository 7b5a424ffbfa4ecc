"""A crystal table -> files other tools read: CIF (P1 or symmetrised), POSCAR, extended
XYZ, an ASE database or pymatgen JSON.

Rows that fail the shared row check (``crystals.row_problem``) or that a writer cannot
write are skipped and listed with their reason, never silently lost. Writes are atomic:
a folder is written beside its target and renamed into place, a file through
``io.atomic_path``, so a killed export leaves the previous result or nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from onnes import crystals
from onnes.config import ConfigError
from onnes.io import atomic_path, current_umask, write_json

log = logging.getLogger(__name__)

# One file per row in a folder, or one file for the whole table.
FOLDER_FORMATS = ("cif", "cif-symmetrized", "poscar")
FILE_FORMATS = ("extxyz", "ase-db", "pymatgen-json")
EXPORT_FORMATS = (*FOLDER_FORMATS, *FILE_FORMATS)
_SUFFIX = {"cif": ".cif", "cif-symmetrized": ".cif", "poscar": ".vasp"}
REPORT_NAME = "export.json"  # marks a folder as an export that a later export may replace
SYMPREC = 0.1  # A; pymatgen's SpacegroupAnalyzer tolerance for the symmetrised CIF


@dataclass
class Exported:
    path: Path
    written: list[str] = field(default_factory=list)  # ids
    skipped: list[dict] = field(default_factory=list)  # {"id", "reason", "detail"}

    def report(self, fmt: str) -> dict:
        reasons = pd.Series([s["reason"] for s in self.skipped], dtype=object).value_counts().to_dict()
        return {"format": fmt, "written": len(self.written), "skipped": len(self.skipped),
                "skipped_by_reason": reasons, "skipped_rows": self.skipped}


def safe_names(ids) -> list[str]:
    """File-name-safe, unique names for ids (a suffix separates ids that collide)."""
    names, seen = [], set()
    for rid in ids:
        base = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in str(rid)) or "row"
        name, k = base, 1
        while name in seen:
            k += 1
            name = f"{base}~{k}"
        seen.add(name)
        names.append(name)
    return names


def scalar_columns(table: pd.DataFrame) -> list[str]:
    """Label columns a per-structure record can carry (not the arrays)."""
    return [c for c in table.columns if c not in crystals.REQUIRED_COLUMNS[1:4]
            and len(table) and pd.api.types.is_scalar(table[c].iloc[0])]


def _labels(row: pd.Series, columns: list[str]) -> dict:
    labels = {}
    for column in columns:
        value = row[column]
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        labels[column] = value.item() if hasattr(value, "item") else value
    return labels


def write_cif(row: pd.Series, path: Path, symprec: float | None = None) -> None:
    from pymatgen.io.cif import CifWriter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = str(CifWriter(crystals.to_structure(row), symprec=symprec))
    path.write_text(text)


def write_poscar(row: pd.Series, path: Path) -> None:
    from pymatgen.io.vasp import Poscar

    Poscar(crystals.to_structure(row), comment=str(row["id"])).write_file(str(path))


def _sane_rows(table: pd.DataFrame, result: Exported) -> pd.DataFrame:
    problems = crystals.row_problems(table)
    bad = problems.reason.notna()
    result.skipped += [{"id": str(rid), "reason": reason, "detail": detail}
                       for rid, reason, detail in zip(table.id[bad], problems.reason[bad], problems.detail[bad])]
    return table[~bad]


def export_cif(table: pd.DataFrame, directory: str | Path, symprec: float | None = None) -> list[Path]:
    """One CIF per row into ``directory`` (which may hold other files), named by safe id."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for (_, row), name in zip(table.iterrows(), safe_names(table.id)):
        path = directory / f"{name}.cif"
        with atomic_path(path) as tmp:
            write_cif(row, tmp, symprec)
        paths.append(path)
    return paths


def _export_folder(table: pd.DataFrame, fmt: str, out: Path, result: Exported) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_NAME).exists():
        raise ConfigError(f"{out}: a folder with other files in it; export into a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for (_, row), name in zip(table.iterrows(), safe_names(table.id)):
            path = staging / f"{name}{_SUFFIX[fmt]}"
            try:
                if fmt == "poscar":
                    write_poscar(row, path)
                else:
                    write_cif(row, path, SYMPREC if fmt == "cif-symmetrized" else None)
                result.written.append(str(row["id"]))
            except Exception as exc:  # one unwritable row never stops the export
                result.skipped.append({"id": str(row["id"]), "reason": "export_error",
                                       "detail": f"{type(exc).__name__}: {exc}"[:300]})
        write_json(staging / REPORT_NAME, result.report(fmt))
        os.chmod(staging, 0o777 & ~current_umask())
        if out.exists():  # a previous export: swap, then remove the old one
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, retired / out.name)
            os.replace(staging, out)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _export_extxyz(table: pd.DataFrame, tmp: Path, result: Exported) -> None:
    from ase.io import write

    columns = scalar_columns(table)
    frames = []
    for _, row in table.iterrows():
        atoms = crystals.to_atoms(row)
        atoms.info.update(_labels(row, columns))
        frames.append(atoms)
        result.written.append(str(row["id"]))
    write(str(tmp), frames, format="extxyz")


def _export_ase_db(table: pd.DataFrame, tmp: Path, result: Exported) -> None:
    """Rows' ids under the key ``name``; labels as key-value pairs where ASE allows the key."""
    from ase.db import connect
    from ase.db.core import reserved_keys

    columns = [c for c in scalar_columns(table) if c.isidentifier() and c not in reserved_keys and c != "name"]
    tmp.unlink(missing_ok=True)  # ASE opens an existing file as a database
    with connect(str(tmp), type="db") as db:
        for _, row in table.iterrows():
            pairs = {k: v for k, v in _labels(row, columns).items() if isinstance(v, (bool, int, float, str))}
            db.write(crystals.to_atoms(row), name=str(row["id"]), **pairs)
            result.written.append(str(row["id"]))


def _export_pymatgen_json(table: pd.DataFrame, tmp: Path, result: Exported) -> None:
    """An object mapping each id to ``Structure.as_dict()``, labels in ``properties``."""
    columns = [c for c in scalar_columns(table) if c != "id"]
    out = {}
    for _, row in table.iterrows():
        structure = crystals.to_structure(row)
        structure.properties.update(_labels(row, columns))
        out[str(row["id"])] = structure.as_dict()
        result.written.append(str(row["id"]))
    tmp.write_text(json.dumps(out, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def export_table(table: pd.DataFrame, fmt: str, out: str | Path) -> Exported:
    """Write the sane rows of ``table`` as ``fmt`` to ``out`` (a folder for CIF and POSCAR,
    a file otherwise); the skipped rows and their reasons come back in the result."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format '{fmt}' (choose from {EXPORT_FORMATS})")
    out = Path(out)
    result = Exported(out)
    sane = _sane_rows(table, result)
    if fmt in FOLDER_FORMATS:
        _export_folder(sane, fmt, out, result)
    else:
        writer = {"extxyz": _export_extxyz, "ase-db": _export_ase_db, "pymatgen-json": _export_pymatgen_json}[fmt]
        with atomic_path(out) as tmp:
            writer(sane, tmp, result)
    for skipped in result.skipped:
        log.warning("not exported: %s (%s: %s)", skipped["id"], skipped["reason"], skipped["detail"])
    return result
