"""Read raw records from cached source files, one generator per data set.

A record is ``{"id", "source", "cif", "labels": {...}}``. Labels keep the source's own
values under the crystal-table column names (``e_form_per_atom`` in eV/atom,
``e_above_hull`` in eV/atom, ...).
"""

from __future__ import annotations

import itertools
import re
import tarfile
from pathlib import Path
from typing import Iterator

import pandas as pd

from onnes.catalogue import DATASET_FILES

_MP_ID = re.compile(r"-MP-(mp-\d+)")


def _float_or_none(value):
    return None if pd.isna(value) else float(value)


def _mp20(cache: Path) -> Iterator[dict]:
    for relpath in DATASET_FILES["mp20"]:
        origin = Path(relpath).name.split(".")[0]
        table = pd.read_csv(cache / relpath).rename(columns={"spacegroup.number": "spacegroup"})
        for row in table.itertuples(index=False):
            yield {
                "id": str(row.material_id),
                "source": "mp20",
                "cif": row.cif,
                "labels": {
                    "material_id": str(row.material_id),
                    "origin": origin,
                    "e_form_per_atom": _float_or_none(row.formation_energy_per_atom),
                    "e_above_hull": _float_or_none(row.e_above_hull),
                    "band_gap": _float_or_none(row.band_gap),
                    "spacegroup": int(row.spacegroup),
                },
            }


def _mpts52(cache: Path) -> Iterator[dict]:
    for relpath in DATASET_FILES["mpts52"]:
        origin = Path(relpath).name.split(".")[0]
        table = pd.read_csv(cache / relpath)
        for row in table.itertuples(index=False):
            yield {
                "id": str(row.material_id),
                "source": "mpts52",
                "cif": row.cif,
                "labels": {
                    "material_id": str(row.material_id),
                    "origin": origin,
                    "e_form_per_atom": _float_or_none(row.formation_energy_per_atom),
                    "e_above_hull": _float_or_none(row.energy_above_hull),
                    "year": int(row.year),
                    "theoretical": bool(row.theoretical),
                },
            }


def _wbm(cache: Path) -> Iterator[dict]:
    (relpath,) = DATASET_FILES["wbm"]
    table = pd.read_csv(cache / relpath, index_col=0)
    for index, row in zip(table.index, table.itertuples(index=False)):
        yield {
            "id": f"wbm-{index}",
            "source": "wbm",
            "cif": row.cif,
            "labels": {
                "e_form_per_atom": _float_or_none(row.formation_energy_per_atom),
                "band_gap": _float_or_none(row.band_gap),
            },
        }


def _3dsc(cache: Path) -> Iterator[dict]:
    tarball = cache / DATASET_FILES["3dsc"][0]
    with tarfile.open(tarball, "r:*") as archive:
        for member in archive:
            if not (member.isfile() and member.name.endswith(".cif")):
                continue
            stem = Path(member.name).stem
            match = _MP_ID.search(stem)
            yield {
                "id": stem,
                "source": "3dsc",
                "cif": archive.extractfile(member).read().decode("utf-8", errors="replace"),
                "labels": {
                    # CIF file names are <formula_sc>-MP-<mp-id>[-synth_doped].cif
                    "formula_sc": stem.split("-MP-")[0],
                    "material_id": match.group(1) if match else None,
                    "synth_doped": stem.endswith("-synth_doped"),
                },
            }


READERS = {"mp20": _mp20, "mpts52": _mpts52, "wbm": _wbm, "3dsc": _3dsc}


def iter_records(dataset: str, cache: str | Path, max_records: int | None = None) -> Iterator[dict]:
    try:
        reader = READERS[dataset]
    except KeyError:
        raise KeyError(f"no structure reader for data set '{dataset}'") from None
    records = reader(Path(cache))
    return itertools.islice(records, max_records) if max_records else records
