"""The crystal table round-trips through Parquet, pymatgen, ASE, CIF and extxyz."""

import os
import stat

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher

from onnes import crystals
from onnes.io import atomic_path


@pytest.fixture
def table(good_structures):
    names = list(good_structures)
    out = crystals.from_structures([good_structures[n] for n in names], names, "test")
    out["tc_K"] = [np.nan, 0.0, 0.3]
    return out


def test_parquet_round_trip_to_pymatgen(table, good_structures, tmp_path):
    crystals.write_table(table, tmp_path / "t.parquet")
    back = crystals.read_table(tmp_path / "t.parquet")
    assert list(back.columns[:5]) == list(crystals.REQUIRED_COLUMNS)
    for (_, row), name in zip(back.iterrows(), good_structures):
        original, restored = good_structures[name], crystals.to_structure(row)
        assert np.allclose(original.lattice.matrix, restored.lattice.matrix)
        assert [s.specie for s in original] == [s.specie for s in restored]
        assert StructureMatcher().fit(original, restored)
    assert np.isnan(back.tc_K[0]) and back.tc_K[1] == 0.0


def test_ase_atoms_match_pymatgen(table):
    for _, row in table.iterrows():
        atoms, structure = crystals.to_atoms(row), crystals.to_structure(row)
        assert np.allclose(atoms.cell[:], structure.lattice.matrix)
        assert np.allclose(atoms.get_positions(), structure.cart_coords)
        assert list(atoms.numbers) == [site.specie.Z for site in structure]


def test_read_rejects_a_table_without_contract_columns(tmp_path):
    pd.DataFrame({"id": ["a"]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="missing columns"):
        crystals.read_table(tmp_path / "x.parquet")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_gives_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "shared.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o640


def test_mismatched_row_is_an_error(table):
    row = table.iloc[0].copy()
    row["species"] = [11]
    with pytest.raises(ValueError, match="species"):
        crystals.to_structure(row)


THREAD_PROBE = """
import os, sys
import pandas as pd
from onnes import crystals

def threads():  # jemalloc's background thread is a plain pthread, not a pyarrow pool worker
    names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    return [name for name in names if name != "jemalloc_bg_thd"]

table = pd.read_parquet(sys.argv[1]) if sys.argv[2] == "pandas" else None
before = threads()
if sys.argv[2] == "onnes":
    table = crystals.read_table(sys.argv[1])
    crystals.write_table(table, sys.argv[1] + ".copy.parquet")
    crystals.read_table(sys.argv[1] + ".copy.parquet")
print(len(before), len(threads()))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_table_io_starts_no_arrow_thread_pool(table, tmp_path):
    """Reading and writing tables leaves no pyarrow worker thread alive to race the
    interpreter's exit (the exit-134 abort: "terminate called without an active
    exception"). pandas' own read_parquet, the control, does start them."""
    import subprocess
    import sys

    path = tmp_path / "t.parquet"
    crystals.write_table(table, path)

    def thread_counts(mode):
        done = subprocess.run([sys.executable, "-c", THREAD_PROBE, str(path), mode], capture_output=True, text=True,
                              check=True)
        return tuple(int(n) for n in done.stdout.split())

    before, after = thread_counts("onnes")
    assert after == before  # no new thread
    control, _ = thread_counts("pandas")
    assert control > before  # pandas' default read started pyarrow's pool
