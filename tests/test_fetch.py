"""Fetching: mirror copies are checksummed; upstream downloads too (via file:// URLs)."""

import gzip
import hashlib
import io
import tarfile

import pytest

from onnes.data import fetch as fetch_module
from onnes.data.fetch import ChecksumError, FetchError, content_digest, fetch, tree_digest
from onnes.catalogue import DATASET_FILES, FILES, RawFile

CSV = b"name,Tc\nMg1B2,39\nPb1,7.2\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def registry(monkeypatch):
    """Register files under test names without touching the real entries."""

    def add(entry: RawFile) -> RawFile:
        monkeypatch.setitem(FILES, entry.path, entry)
        return entry

    return add


def test_mirror_copy_verified(tmp_path, registry):
    (tmp_path / "mirror/t").mkdir(parents=True)
    (tmp_path / "mirror/t/a.csv").write_bytes(CSV)
    registry(RawFile("t/a.csv", sha(CSV), sha(CSV), "unused", "plain"))
    target = fetch("t/a.csv", tmp_path / "cache", tmp_path / "mirror")
    assert target.read_bytes() == CSV


def test_tampered_mirror_is_refused_and_leaves_no_file(tmp_path, registry):
    (tmp_path / "mirror/t").mkdir(parents=True)
    (tmp_path / "mirror/t/a.csv").write_bytes(CSV + b"Nb3Sn1,18\n")
    registry(RawFile("t/a.csv", sha(CSV), sha(CSV), "unused", "plain"))
    with pytest.raises(ChecksumError, match="refusing"):
        fetch("t/a.csv", tmp_path / "cache", tmp_path / "mirror")
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_missing_mirror_file_and_unknown_path(tmp_path, registry):
    registry(RawFile("t/a.csv", sha(CSV), sha(CSV), "unused", "plain"))
    with pytest.raises(FetchError, match="not found in the mirror"):
        fetch("t/a.csv", tmp_path / "cache", tmp_path / "mirror")
    with pytest.raises(FetchError, match="not a registered data file"):
        fetch("t/nothing.csv", tmp_path / "cache", tmp_path / "mirror")


def test_upstream_plain_file_is_gzipped_into_cache(tmp_path, registry):
    (tmp_path / "up.csv").write_bytes(CSV)
    registry(RawFile("t/a.csv.gz", "mirror-bytes-differ", sha(CSV), (tmp_path / "up.csv").as_uri(), "plain"))
    target = fetch("t/a.csv.gz", tmp_path / "cache")
    assert gzip.decompress(target.read_bytes()) == CSV
    # A second call finds the verified file by its content digest and does not download.
    (tmp_path / "up.csv").unlink()
    assert fetch("t/a.csv.gz", tmp_path / "cache") == target


def test_upstream_content_mismatch_is_refused(tmp_path, registry):
    (tmp_path / "up.csv").write_bytes(CSV + b"changed,1\n")
    registry(RawFile("t/a.csv.gz", "x", sha(CSV), (tmp_path / "up.csv").as_uri(), "plain"))
    with pytest.raises(ChecksumError, match="upstream changed"):
        fetch("t/a.csv.gz", tmp_path / "cache")
    assert not (tmp_path / "cache/t/a.csv.gz").exists()


def test_upstream_unreachable_names_the_mirror_option(tmp_path, registry, monkeypatch):
    monkeypatch.setattr(fetch_module.time, "sleep", lambda s: None)
    registry(RawFile("t/a.csv", "x", "y", (tmp_path / "absent.csv").as_uri(), "plain"))
    with pytest.raises(FetchError, match="data_mirror"):
        fetch("t/a.csv", tmp_path / "cache")


def test_upstream_repository_tarball_subtree(tmp_path, registry):
    files = {"repo-main/data/cifs/A-MP-mp-1.cif": b"a", "repo-main/data/cifs/B-MP-mp-2.cif": b"b",
             "repo-main/README.md": b"readme"}
    with tarfile.open(tmp_path / "repo.tar.gz", "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    expected = sha("".join(sorted(f"cifs/{n}\0{sha(d)}\n" for n, d in
                                  [("A-MP-mp-1.cif", b"a"), ("B-MP-mp-2.cif", b"b")])).encode())
    registry(RawFile("t/cifs.tar.gz", "x", expected, (tmp_path / "repo.tar.gz").as_uri(),
                     "github_tree:repo-main/data/cifs"))
    target = fetch("t/cifs.tar.gz", tmp_path / "cache")
    with tarfile.open(target) as archive:
        assert sorted(archive.getnames()) == ["cifs/A-MP-mp-1.cif", "cifs/B-MP-mp-2.cif"]
    assert tree_digest(target) == expected


@pytest.mark.mirror
def test_every_registered_file_in_the_mirror_verifies(mirror, tmp_path):
    for path, entry in FILES.items():
        assert content_digest(mirror / path) == entry.content_sha256, path
    for dataset in DATASET_FILES:
        for path in DATASET_FILES[dataset]:
            assert fetch(path, tmp_path, mirror).is_file()


def test_mirror_check_at_start_names_what_is_missing(tmp_path):
    """The workflow's start-up check: a missing directory, then files neither mirrored
    nor cached, each named; cached files need no mirror copy."""
    from onnes.data.fetch import check_mirror

    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    paths = ["a/one.csv.gz", "b/two.csv.gz"]
    with pytest.raises(FetchError, match="does not exist"):
        check_mirror(mirror, paths, cache)
    (mirror / "a").mkdir(parents=True)
    (mirror / "a/one.csv.gz").write_bytes(b"x")
    with pytest.raises(FetchError, match=r"1 file\(s\).*b/two\.csv\.gz") as error:
        check_mirror(mirror, paths, cache)
    assert "a/one.csv.gz" not in str(error.value)
    (cache / "b").mkdir(parents=True)
    (cache / "b/two.csv.gz").write_bytes(b"y")
    check_mirror(mirror, paths, cache)
