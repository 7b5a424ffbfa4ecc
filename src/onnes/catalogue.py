"""The data catalogue: each public data set's raw files (whence, checksums) and its role in a campaign.

Each file is kept under the same relative path in a mirror directory (e.g.
``../shared/data``) and in the campaign's local cache. Two checksums per file:

- ``sha256``: of the file exactly as stored in a mirror; verified on every mirror copy.
- ``content_sha256``: of its content as published upstream: the decompressed bytes of a
  ``.gz`` file, or for a tarball of a directory the digest of its manifest (see
  :func:`onnes.data.fetch.tree_digest`). Verified after an upstream download, whose
  compression and tar metadata need not match the mirror byte for byte.

Sources and licences: 3DSC (Sommer et al., Sci. Data 10, 816, 2023; CC-BY-4.0),
SuperCon as redistributed by 3DSC (Stanev et al., npj Comput. Mater. 4, 29, 2018),
MP-20 / MPTS-52 / WBM in the WyckoffTransformer repository (CDVAE, DiffCSP, Wang et al.
2021), LeMat-GenBench MP-20 hull data, matbench-discovery MP elemental references.
"""

from __future__ import annotations

from dataclasses import dataclass

_WT = "https://raw.githubusercontent.com/SymmetryAdvantage/WyckoffTransformer"
_3DSC = "https://raw.githubusercontent.com/aimat-lab/3DSC/main/superconductors_3D/data"


@dataclass(frozen=True)
class RawFile:
    path: str  # relative path in a mirror and in the cache
    sha256: str
    content_sha256: str
    url: str
    # "plain": the URL serves the decompressed content (gzip it into the cache);
    # "gzip": the URL serves a gzip stream; "github_tree:<repo archive subdir>": the URL
    # is a repository tarball whose sub-directory becomes the cached tarball.
    upstream_form: str = "gzip"


FILES: dict[str, RawFile] = {
    f.path: f
    for f in [
        RawFile(
            "mp20/biternary_test.csv.gz",
            "e96144ffbad7fc61b0012456ead22d2c8f6993282a4fef584fbf906581086e02",
            "f8fe51d9eacfc3ec4f7614399b79383a8e158ddd3c54137eb182027d1a866276",
            f"{_WT}/main/data/mp_20_biternary/test.csv.gz",
        ),
        RawFile(
            "mp20/biternary_val.csv.gz",
            "f0a1743241ade50592ce24dd3efc8b5e4d4d84c6a72e827c16699e83ce254f07",
            "8f14dfefa9beb88739e5e21d75c797265f51b754105613a20aee9d1478e01e86",
            f"{_WT}/main/data/mp_20_biternary/val.csv.gz",
        ),
        RawFile(
            "mp20/pilot_train.csv.gz",
            "a89a708d16d80401fe256d6742680f2e02ed5746f1a685cfea1b509754fe728e",
            "0886381eb4bb65fc58bbb91f066139b4dc914b1d7252ab17d57b67d2c271742a",
            f"{_WT}/85bd47b33a7b55d418b1de10dad297fcf73b9b44/data/mp_20_pilot/train.csv.gz",
        ),
        RawFile(
            "mp20/pilot_val.csv.gz",
            "b03d4aeb363a7ec3018cea66e2e69fce3ca3b518c900531a03a1266d5d392eb6",
            "8b17bf9ddb4f30de54d195a41f18f4e12232ec451b54d5df2d11e278e49e5bce",
            f"{_WT}/75b65cc216e9545e7833dfe7bbb5a67a86ac2481/data/mp_20_pilot/val.csv.gz",
        ),
        RawFile(
            "mp20/pilot_test.csv.gz",
            "c0b5922164322338d0e282d4429b2dc8ab31ffa39d456d05e102b6ec88ea7262",
            "e59e691ec1ebb83c84a2eaec274f3654d23fcea729d8d4d52022b5dd02e3eb50",
            f"{_WT}/75b65cc216e9545e7833dfe7bbb5a67a86ac2481/data/mp_20_pilot/test.csv.gz",
        ),
        RawFile(
            "mpts52/test.csv.gz",
            "5c082d8cd8b5398bb9971f076e2f459771e01b45b1a2d206f665bd99a1369feb",
            "4d6e76c4726fb12fb2a7e5bb23594f9b82dbd9bf67b7bfd4866e9c74a8f49038",
            f"{_WT}/main/data/mpts_52/test.csv.gz",
        ),
        RawFile(
            "mpts52/val.csv.gz",
            "af56fcaa2ed7f36e9ec0ce95ae409c73f4c909644153c3d441c76f87a4d1c11d",
            "b5d9f7a8ff72f3a1f24d6bb97e11ad201be40d10be7b27924234da06af04baba",
            f"{_WT}/main/data/mpts_52/val.csv.gz",
        ),
        RawFile(
            "wbm/sample.csv.gz",
            "5a2fe636cbac4759f600d0ecd1740289db9740eb90014f773dbe02cab9de0aa2",
            "d7554fe5b1532ad2c651548e02b2981639432bfe3275f455113e1e25e80dd8ab",
            f"{_WT}/main/data/wbm/val.csv.gz",
        ),
        RawFile(
            "superconductors/3dsc_mp_cifs.tar.gz",
            "d312309ceec3b11f491e38ae6ffbefbb33c55d6f2846dadc4b74314c362f6843",
            "5c05456198a62ec22e946db2e20481951785f532daf679f17493a5476cc4671e",
            "https://codeload.github.com/aimat-lab/3DSC/tar.gz/refs/heads/main",
            "github_tree:3DSC-main/superconductors_3D/data/final/MP/cifs",
        ),
        RawFile(
            "superconductors/3dsc_icsd_formula_tc.csv.gz",
            "a8fbfff88bf9943e57b296c302ece76dd966385dd913789cd7a43f9696894241",
            "5418d596e167725005b2abbc6d948a39a394ed8e63ab47f1851c91c9ffd5ba7d",
            f"{_3DSC}/final/ICSD/3DSC_ICSD_only_IDs.csv",
            "plain",
        ),
        RawFile(
            "superconductors/supercon_stanev2018.csv",
            "b34a955cc59f7a1556bc92c4b9db559bfd634c03227b7e95337a2e5d69227dd6",
            "b34a955cc59f7a1556bc92c4b9db559bfd634c03227b7e95337a2e5d69227dd6",
            f"{_3DSC}/source/SuperCon/raw/Supercon_data_by_2018_Stanev.csv",
            "plain",
        ),
        RawFile(
            "hull_refs/mp20_formation_energies.parquet",
            "3fba7ec7350396196660bc15f653187441685f0c91fec87f562a8672abf2bc76",
            "3fba7ec7350396196660bc15f653187441685f0c91fec87f562a8672abf2bc76",
            "https://raw.githubusercontent.com/LeMaterial/lemat-genbench/main/data/mp20_hulls/"
            "ensemble_above_hull_dataset.parquet",
            "plain",
        ),
        RawFile(
            "hull_refs/mp_elemental_reference_entries_2023-02-07.json.gz",
            "9fd6ef848a91c88840a0d1709b5856d0edb4af22095237e59db52f2acd6bbf79",
            "3e66c10bfd00035c6f08f5737e2b7eda2637b9aeeb349c024bca8b5bbb535fa2",
            "https://figshare.com/files/40387775",
        ),
    ]
}

# Which raw files each curated data set reads. `hull_refs` is fetched for the
# screening stage (convex hull), not curated.
DATASET_FILES: dict[str, tuple[str, ...]] = {
    "mp20": (
        "mp20/pilot_train.csv.gz",
        "mp20/pilot_val.csv.gz",
        "mp20/pilot_test.csv.gz",
        "mp20/biternary_val.csv.gz",
        "mp20/biternary_test.csv.gz",
    ),
    "mpts52": ("mpts52/val.csv.gz", "mpts52/test.csv.gz"),
    "wbm": ("wbm/sample.csv.gz",),
    "3dsc": (
        "superconductors/3dsc_mp_cifs.tar.gz",
        "superconductors/3dsc_icsd_formula_tc.csv.gz",
        "superconductors/supercon_stanev2018.csv",
    ),
    "supercon": ("superconductors/supercon_stanev2018.csv",),
    "hull_refs": (
        "hull_refs/mp20_formation_energies.parquet",
        "hull_refs/mp_elemental_reference_entries_2023-02-07.json.gz",
    ),
}

STRUCTURE_DATASETS = ("mp20", "mpts52", "wbm", "3dsc")
COMPOSITION_DATASETS = ("supercon",)

# -- roles: what the later stages take each data set or file for --------------------
# MP-20's DFT formation energies (LeMat-GenBench): the convex hull's reference entries,
# and the band gaps the Tc predictor's metallicity gate and negatives learn from.
HULL_REFERENCE_FILE = "hull_refs/mp20_formation_energies.parquet"
# MP's elemental reference entries (matbench-discovery): each element's ground state.
ELEMENT_REFERENCE_FILE = "hull_refs/mp_elemental_reference_entries_2023-02-07.json.gz"
# Files fetched for later stages, not curated.
AUXILIARY_FILES = DATASET_FILES["hull_refs"]
# Structure sets with DFT energies on MP-2020-compatible footing whose curated rows join
# the hull when the campaign curates them (screen.hull_datasets: null).
DEFAULT_HULL_DATASETS = ("mpts52", "wbm")
# The Tc predictor's labelled inputs: data set -> the predictor's argument.
TC_INPUTS = {"supercon": "supercon", "3dsc": "structures"}
# The training set the report's density and element figures compare samples with, when
# the campaign curates it (else its first structure set).
STRUCTURE_REFERENCE = "mp20"
