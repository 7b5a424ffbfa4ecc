"""Fetch raw data files into the cache: from a mirror directory or from upstream.

Every file is checked against the registry (``onnes.catalogue``); a mismatch is an
error and the bad bytes never reach the cache (they are written to a temporary file
that is removed on failure).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import shutil
import tarfile
import time
import urllib.request
from pathlib import Path

from onnes.catalogue import FILES, RawFile
from onnes.io import atomic_path

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


class ChecksumError(RuntimeError):
    """A file's checksum differs from the registry's."""


class FetchError(RuntimeError):
    """A file could not be obtained from the mirror or upstream."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digest(tarball: str | Path) -> str:
    """Digest of a tarball's regular files that ignores tar/gzip metadata.

    sha256 over the sorted lines ``name NUL sha256(content) LF``, one per file, so a
    tarball rebuilt from the same upstream directory gives the same digest.
    """
    lines = []
    with tarfile.open(tarball, "r:*") as archive:
        for member in archive:
            if member.isfile():
                content = archive.extractfile(member).read()
                lines.append(f"{member.name}\0{hashlib.sha256(content).hexdigest()}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def content_digest(path: str | Path) -> str:
    """sha256 of the content as published upstream (see ``sources`` module docstring)."""
    name = str(path)
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return tree_digest(path)
    if name.endswith(".gz"):
        digest = hashlib.sha256()
        with gzip.open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()
    return sha256_file(path)


def is_cached(entry: RawFile, target: Path) -> bool:
    if not target.is_file():
        return False
    return sha256_file(target) == entry.sha256 or content_digest(target) == entry.content_sha256


def fetch(path: str, cache_dir: str | Path, mirror: str | Path | None = None) -> Path:
    """Bring the registry file ``path`` into ``cache_dir`` (no-op if already verified)."""
    try:
        entry = FILES[path]
    except KeyError:
        raise FetchError(f"'{path}' is not a registered data file; known: {sorted(FILES)}") from None
    target = Path(cache_dir) / entry.path
    if is_cached(entry, target):
        log.info("%s: already in cache, checksum ok", entry.path)
        return target
    if mirror is not None:
        _copy_from_mirror(entry, Path(mirror), target)
    else:
        _download(entry, target)
    return target


def check_mirror(mirror: str | Path, paths: list[str], cache_dir: str | Path) -> None:
    """Fail at workflow start, not in a job, when the mirror cannot serve a file the
    campaign needs: a missing directory, or files neither in the mirror nor cached."""
    mirror, cache_dir = Path(mirror), Path(cache_dir)
    missing = [p for p in paths if not (cache_dir / p).is_file() and not (mirror / p).is_file()]
    if not missing:
        return
    if not mirror.is_dir():
        raise FetchError(f"config key 'data_mirror': the mirror directory {mirror} does not exist")
    raise FetchError(
        f"config key 'data_mirror': {len(missing)} file(s) this campaign needs are not in the mirror "
        f"{mirror}: {', '.join(missing)} (a mirror is laid out like the upstream data mirror, see docs/guide/data.md)"
    )


def _copy_from_mirror(entry: RawFile, mirror: Path, target: Path) -> None:
    source = mirror / entry.path
    if not source.is_file():
        raise FetchError(
            f"{entry.path}: not found in the mirror {mirror} (expected {source}); "
            "a mirror must be laid out like the upstream data mirror (see docs/guide/data.md)"
        )
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
        actual = sha256_file(tmp)
        if actual != entry.sha256:
            raise ChecksumError(
                f"{entry.path}: sha256 of the mirror copy {source} is {actual}, "
                f"expected {entry.sha256}; refusing to use it"
            )
    log.info("%s: copied from mirror, sha256 ok", entry.path)


def _download(entry: RawFile, target: Path, attempts: int = 3) -> None:
    with atomic_path(target.with_name(target.name + ".download")) as raw:
        _download_to(entry.url, raw, attempts)
        with atomic_path(target) as tmp:
            form = entry.upstream_form
            if form == "gzip":
                shutil.copyfile(raw, tmp)
            elif form == "plain" and entry.path.endswith(".gz"):
                _gzip_deterministic(raw, tmp)
            elif form == "plain":
                shutil.copyfile(raw, tmp)
            elif form.startswith("github_tree:"):
                _extract_subtree(raw, tmp, form.split(":", 1)[1])
            else:
                raise FetchError(f"{entry.path}: unknown upstream form '{form}'")
            actual = content_digest(tmp)
            if actual != entry.content_sha256:
                raise ChecksumError(
                    f"{entry.path}: content sha256 of the download from {entry.url} is "
                    f"{actual}, expected {entry.content_sha256}; upstream changed or the "
                    "download is corrupt, refusing to use it"
                )
    log.info("%s: downloaded from %s, checksum ok", entry.path, entry.url)


def _download_to(url: str, destination: Path, attempts: int) -> None:
    for attempt in range(1, attempts + 1):
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "onnes-data-fetch"})
            with urllib.request.urlopen(request, timeout=120) as response, open(destination, "wb") as out:
                shutil.copyfileobj(response, out, _CHUNK)
            return
        except OSError as exc:  # URLError, timeouts and connection resets are OSErrors
            if attempt == attempts:
                raise FetchError(
                    f"could not download {url} after {attempts} attempts: {exc}. "
                    "Without internet, set the config key data_mirror to a mirror directory."
                ) from exc
            time.sleep(2**attempt)


def _gzip_deterministic(source: Path, destination: Path) -> None:
    with open(source, "rb") as src, open(destination, "wb") as raw_out:
        with gzip.GzipFile(fileobj=raw_out, mode="wb", mtime=0) as out:
            shutil.copyfileobj(src, out, _CHUNK)


def _extract_subtree(repo_tarball: Path, destination: Path, subdir: str) -> None:
    """Repack ``subdir`` of a repository tarball as ``<basename(subdir)>/...``."""
    prefix = subdir.rstrip("/") + "/"
    top = Path(subdir).name
    with tarfile.open(repo_tarball, "r:*") as archive, tarfile.open(destination, "w:gz") as out:
        found = 0
        for member in archive:
            if member.isfile() and member.name.startswith(prefix):
                data = archive.extractfile(member).read()
                info = tarfile.TarInfo(f"{top}/{member.name[len(prefix):]}")
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
                found += 1
    if not found:
        raise FetchError(f"no files under '{subdir}' in the downloaded archive")
