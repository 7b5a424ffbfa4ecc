"""Batched CHGNet relaxation: same result as chgnet's StructOptimizer, reasoned rejects,
resumable chunks."""

import numpy as np
import pandas as pd
import pytest
from conftest import rocksalt, silicon

from onnes import crystals
from onnes.screen import relax as relax_module
from onnes.screen.relax import RelaxSettings, relax_batch, relax_table

pytest.importorskip("chgnet")


@pytest.fixture(scope="module")
def model():
    return relax_module.load_chgnet("cpu")


def perturbed_table():
    rng = np.random.default_rng(0)
    structures = [rocksalt(5.5), silicon()]
    for s in structures:
        for i in range(len(s)):
            s.translate_sites([i], rng.normal(0, 0.05, 3), frac_coords=False)
    return crystals.from_structures(structures, ["nacl", "si"], "test")


def test_batched_relaxation_matches_struct_optimizer(model):
    from chgnet.model import StructOptimizer

    table = perturbed_table()
    settings = RelaxSettings(max_steps=200)
    result = relax_batch(model, table, settings).set_index("id")
    optimizer = StructOptimizer(model=model, use_device="cpu")
    for _, row in table.iterrows():
        reference = optimizer.relax(crystals.to_structure(row), fmax=settings.fmax, steps=settings.max_steps,
                                    verbose=False)
        energy = reference["trajectory"].energies[-1] / len(row["species"])
        assert result.loc[row["id"], "relax_converged"]
        assert result.loc[row["id"], "energy_chgnet_per_atom"] == pytest.approx(energy, abs=1e-3)
        assert result.loc[row["id"], "fmax"] < settings.fmax
    relaxed = crystals.to_structure(result.reset_index().iloc[0])
    assert relaxed.composition.reduced_formula == "NaCl"


def test_bad_structures_are_rejected_with_reasons(model):
    table = perturbed_table()
    bad = pd.concat([table.iloc[[0]]] * 4, ignore_index=True)
    bad["id"] = ["nan", "unknown-z", "huge", "americium"]
    bad.at[3, "species"] = [95] * len(bad.species[3])  # a real element outside CHGNet's training data
    bad.at[0, "frac_coords"] = [float("nan")] * len(bad.frac_coords[0])
    bad.at[1, "species"] = [150] * len(bad.species[1])
    big = crystals.from_structures([rocksalt().make_supercell([4, 4, 4])], ["huge"], "t").iloc[0]
    for column in ("species", "frac_coords", "lattice"):
        bad.at[2, column] = big[column]
    result = relax_batch(model, bad, RelaxSettings(max_atoms=200)).set_index("id")
    assert (result.relax_status == "rejected").all()
    assert "non-finite" in result.relax_error["nan"]
    assert "Z=150" in result.relax_error["unknown-z"]
    assert "512 atoms" in result.relax_error["huge"]
    assert "Z=95" in result.relax_error["americium"]


def test_killed_job_resumes_without_redoing_chunks(model, tmp_path, monkeypatch):
    table = perturbed_table()
    settings = RelaxSettings(max_steps=3, chunk_size=1)
    first = relax_table(model, table, tmp_path, settings)
    assert sorted(p.name for p in (tmp_path / "parts").glob("*.parquet")) == ["00000.parquet", "00001.parquet"]
    (tmp_path / "parts/00001.parquet").unlink()  # as if killed before the second chunk finished
    calls = []
    real = relax_module.relax_batch

    def counting(model_, chunk, settings_):
        calls.append(list(chunk.id))
        return real(model_, chunk, settings_)

    monkeypatch.setattr(relax_module, "relax_batch", counting)
    second = relax_table(model, table, tmp_path, settings)
    assert calls == [["si"]]
    pd.testing.assert_frame_equal(first[["id", "relax_status"]], second[["id", "relax_status"]])


def test_changed_settings_discard_finished_chunks(model, tmp_path):
    table = perturbed_table()
    relax_table(model, table, tmp_path, RelaxSettings(max_steps=2, chunk_size=1))
    stale = tmp_path / "parts/00000.parquet"
    stale_time = stale.stat().st_mtime_ns
    result = relax_table(model, table, tmp_path, RelaxSettings(max_steps=4, chunk_size=1))
    assert stale.stat().st_mtime_ns != stale_time  # recomputed, not reused
    assert result.relax_steps.max() > 2


def test_shards_split_rows_without_overlap():
    table = pd.DataFrame({"id": [str(i) for i in range(10)]})
    shards = [relax_module.shard_rows(table, i, 3).id.tolist() for i in range(3)]
    assert sum(shards, []) == table.id.tolist()
    assert [len(s) for s in shards] == [3, 3, 4]
