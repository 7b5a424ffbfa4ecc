"""Combined data sets (data.combined): the union of curated sets, one row per crystal."""

import json

import pandas as pd
import pytest
from conftest import perovskite, rocksalt, silicon

from onnes import cli
from onnes import config as cfg
from onnes.crystals import from_structures, read_table, write_table
from onnes.data.combine import combine
from onnes.graph import CampaignGraph
from onnes.stage_settings import stage_settings

DEDUP = {"enabled": True, "ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}


def curated(structures: dict, source: str, **labels) -> pd.DataFrame:
    table = from_structures(list(structures.values()), list(structures), source)
    table["formula"] = [s.composition.reduced_formula for s in structures.values()]
    for column, values in labels.items():
        table[column] = values
    return table


def members() -> dict[str, pd.DataFrame]:
    strained = rocksalt(5.70)  # NaCl within StructureMatcher's tolerances
    return {
        "mp20": curated({"mp-1": rocksalt(), "mp-2": silicon()}, "mp20", e_form_per_atom=[-2.0, 0.0]),
        "mpts52": curated({"mp-1": rocksalt(), "mp-3": perovskite()}, "mpts52", e_form_per_atom=[-2.1, -3.5]),
        "wbm": curated({"wbm-7": strained, "wbm-8": silicon().make_supercell([2, 1, 1], in_place=False)}, "wbm"),
    }


def test_union_keeps_each_crystal_once_and_counts_every_drop():
    result = combine("general", members(), DEDUP)
    kept, dropped, report = result.kept, result.dropped, result.report
    assert list(kept["id"]) == ["mp-1", "mp-2", "mp-3"]
    assert report["records_in"] == 6 == len(kept) + len(dropped)
    reasons = dict(zip(dropped["id"], dropped["drop_detail"]))
    assert reasons["mp-1"] == "same id as a row of mp20"  # MPTS-52's copy of an MP-20 id
    assert reasons["wbm-7"] == "StructureMatcher-equivalent to mp-1"  # another id, the same crystal
    assert reasons["wbm-8"] == "StructureMatcher-equivalent to mp-2"  # a supercell of silicon
    assert set(dropped["drop_reason"]) == {"duplicate"}
    # the first member keeps a shared crystal with its labels and source
    first = kept.set_index("id")
    assert first.loc["mp-1", "e_form_per_atom"] == -2.0 and first.loc["mp-1", "source"] == "mp20"
    assert list(kept["member"]) == ["mp20", "mp20", "mpts52"]
    assert report["kept_by_member"] == {"mp20": 2, "mpts52": 1, "wbm": 0}
    assert report["combined_from"] == {"mp20": 2, "mpts52": 2, "wbm": 2}


def test_union_order_decides_which_copy_stays():
    reordered = dict(reversed(list(members().items())))
    result = combine("general", reordered, DEDUP)
    assert list(result.kept["id"]) == ["wbm-7", "wbm-8", "mp-3"]  # WBM listed first now
    dropped = result.dropped.set_index("id")["drop_detail"]
    assert dropped["mp-2"] == "StructureMatcher-equivalent to wbm-8"


def test_max_atoms_drops_with_a_reason_before_structures_are_compared():
    result = combine("general", members(), DEDUP, max_atoms=5)
    assert list(result.kept["id"]) == ["mp-2", "mp-3"]  # both conventional NaCl cells (8 sites) go
    too_large = result.dropped[result.dropped["drop_reason"] == "too_many_atoms"]
    assert list(too_large["id"]) == ["mp-1", "wbm-7"]
    assert set(too_large["drop_detail"]) == {"8 sites > max_atoms 5"}
    assert result.report["records_in"] == len(result.kept) + len(result.dropped)


def combined_config(**entry) -> dict:
    return {"data": {"datasets": ["mp20", "mpts52", "wbm"],
                     "combined": {"general": {"datasets": ["mp20", "mpts52", "wbm"], **entry}}},
            "models": {"flow-general": {"family": "flow", "dataset": "general"}},
            "active_models": ["flow-general"], "active_baselines": []}


def test_config_accepts_a_model_on_a_combined_set_and_refuses_bad_members():
    config = cfg.validate(combined_config())
    assert "general" in CampaignGraph(config).structure_datasets()
    assert cfg.dataset_settings(config["data"], "general")["split_by"] == "structure"
    bad = combined_config()
    bad["data"]["combined"]["general"]["datasets"] = ["mp20", "oqmd"]
    with pytest.raises(cfg.ConfigError, match=r"'data.combined.general.datasets': 'oqmd' is neither"):
        cfg.validate(bad)
    clash = combined_config()
    clash["data"]["combined"] = {"mp20": {"datasets": ["mpts52", "wbm"]}}
    with pytest.raises(cfg.ConfigError, match="'mp20' is already a data set's name"):
        cfg.validate(clash)
    nested = combined_config()
    nested["data"]["combined"]["more"] = {"datasets": ["general", "wbm"]}
    nested["models"]["flow-more"] = {"family": "flow", "dataset": "more"}
    nested["active_models"].append("flow-more")
    with pytest.raises(cfg.ConfigError, match="'general' is neither"):
        cfg.validate(nested)


def test_a_combined_set_no_trained_model_uses_is_not_built():
    """A preset inherits the default campaign's combined sets (config files are merged):
    the demo curates no MPTS-52 or WBM and does not train flow-general, so 'general'
    is neither checked nor built."""
    config = combined_config()
    config["data"]["datasets"] = ["mp20", "3dsc"]
    config["models"]["flow"] = {"family": "flow", "dataset": "mp20"}
    config["active_models"] = ["flow"]
    config = cfg.validate(config)
    assert CampaignGraph(config).used_combined() == []
    config["active_models"] = ["flow-general"]
    with pytest.raises(cfg.ConfigError, match="'mpts52' is neither"):
        cfg.validate(config)
    with pytest.raises(cfg.ConfigError, match="datasets"):
        cfg.validate({"data": {"combined": {"general": {"datasets": ["mp20"]}}}})  # one member is no union


def test_combine_and_split_commands_keep_a_crystal_in_one_split(tmp_path, capsys):
    paths = []
    for name, table in members().items():
        write_table(table, tmp_path / name / "curated.parquet")
        paths.append(f"--member={name}={tmp_path / name / 'curated.parquet'}")
    config = cfg.validate(combined_config())
    settings = {rule: json.dumps(stage_settings(config, rule, dataset="general"))
                for rule in ("combine_datasets", "split_dataset")}
    out = tmp_path / "general"
    assert cli.main(["data", "combine", "--dataset", "general", *paths, "--out-dir", str(out),
                     "--settings", settings["combine_datasets"]]) == 0
    table = read_table(out / "curated.parquet")
    assert list(table["id"]) == ["mp-1", "mp-2", "mp-3"]
    report = json.loads((out / "curation.json").read_text())
    assert report["kept"] == 3 and report["dropped"] == {"duplicate": 3}
    assert cli.main(["data", "split", "--dataset", "general", "--input", str(out / "curated.parquet"),
                     "--out-dir", str(out), "--settings", settings["split_dataset"]]) == 0
    ids = [set(read_table(out / f"{s}.parquet")["id"]) for s in ("train", "val", "test")]
    assert sum(map(len, ids)) == 3 and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert cli.main(["data", "combine", "--dataset", "general", *paths[:2], "--out-dir", str(out),
                     "--settings", settings["combine_datasets"]]) == 2
    assert "--member names ['mp20', 'mpts52'] are not" in capsys.readouterr().err


@pytest.mark.mirror
def test_union_of_real_mp20_and_mpts52_slices(mirror, tmp_path):
    """MP-20 and MPTS-52 are both Materials Project crystals: their union drops the
    shared ones and keeps every other row, each drop with a reason."""
    from onnes.data.curate import curate
    from onnes.data.fetch import fetch
    from onnes.catalogue import DATASET_FILES

    config = cfg.validate({"active_baselines": [], "data": {"datasets": ["mp20", "mpts52"],
                                    "per_dataset": {"mp20": {"max_records": 400}, "mpts52": {"max_records": 400}}}})
    for dataset in ("mp20", "mpts52"):
        for path in DATASET_FILES[dataset]:
            fetch(path, tmp_path, mirror)
    parts = {d: curate(d, tmp_path, config["data"]).kept for d in ("mp20", "mpts52")}
    result = combine("general", parts, config["data"]["dedup"])
    assert result.report["records_in"] == len(result.kept) + len(result.dropped) == sum(map(len, parts.values()))
    assert result.kept["id"].is_unique
    shared = set(parts["mp20"]["id"]) & set(parts["mpts52"]["id"])
    assert set(result.dropped.loc[result.dropped["drop_detail"].str.startswith("same id"), "id"]) == shared
