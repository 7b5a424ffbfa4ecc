"""Atomic file writes: a killed job never leaves a half-written output behind.

Each writer produces a temporary file in the target directory and renames it over the
target (``os.replace`` is atomic on POSIX within one file system).

Parquet is read and written on the calling thread (:func:`read_parquet`,
:func:`write_parquet`). pyarrow's default starts its process-wide CPU and I/O thread
pools, C++ ``std::thread`` workers that live until the process exits; their teardown
can race interpreter shutdown and abort a job after its work is done with "terminate
called without an active exception" (exit 134; apache/arrow#34314 and #39862 report it
after parquet reads). The tables here are small, so nothing is lost by reading them on
one thread, and no pool is ever started.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keep the target's suffixes (".csv.gz", ".parquet") so readers that go by the
    # file name treat the temporary file like the final one.
    suffix = ".tmp" + "".join(target.suffixes[-2:])
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    # mkstemp creates the file 0600; give the target the mode a plain open() would, so
    # collaborators on a shared file system can read the campaign's results.
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_parquet(path: str | Path, columns: list[str] | None = None):
    """A Parquet file as a pandas DataFrame, read without pyarrow's thread pools."""
    import pyarrow.parquet as pq

    # ParquetFile, not read_table: read_table goes through pyarrow.dataset, whose scan
    # starts a pool thread even with use_threads=False
    with pq.ParquetFile(path, pre_buffer=False) as handle:
        table = handle.read(columns=columns, use_threads=False)
    return table.to_pandas(use_threads=False)


def write_parquet(frame, path: str | Path) -> None:
    """Write a pandas DataFrame (without its index) to Parquet atomically, on this thread."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
