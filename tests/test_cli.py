"""The CLI: config display, clear errors with exit code 2, export."""

import subprocess
import sys

import pytest
import yaml
from conftest import perovskite, rocksalt

from onnes import cli, crystals
from onnes.cli import main


def test_config_show_fills_defaults(capsys):
    assert main(["config", "--set", "data.split.train=0.7", "--set", "data.split.val=0.2"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["data"]["split"] == {"train": 0.7, "val": 0.2, "test": 0.1}


def test_config_error_exits_2_with_message(capsys):
    assert main(["config", "--set", "data.max_atomz=3"]) == 2
    assert "unknown config key 'data.max_atomz'" in capsys.readouterr().err


def test_export_both_formats(tmp_path):
    table = crystals.from_structures([rocksalt(), perovskite()], ["a", "b"], "test")
    crystals.write_table(table, tmp_path / "t.parquet")
    assert main(["data", "export", "--table", str(tmp_path / "t.parquet"), "--format", "cif",
                 "--out", str(tmp_path / "cifs")]) == 0
    assert sorted(p.name for p in (tmp_path / "cifs").iterdir()) == ["a.cif", "b.cif", "export.json"]
    assert main(["data", "export", "--table", str(tmp_path / "t.parquet"), "--format", "extxyz",
                 "--out", str(tmp_path / "t.extxyz")]) == 0
    assert (tmp_path / "t.extxyz").read_text().count("Lattice=") == 2


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "onnes.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "onnes" in result.stdout


@pytest.mark.parametrize("argv", [["data", "curate", "--dataset", "mp20"], ["nostage"]])
def test_usage_errors_exit_nonzero(argv):
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code != 0


def test_relax_is_a_screening_command_and_keeps_its_old_name():
    parser = cli.build_parser()
    new = parser.parse_args(["screen", "relax", "--table", "t.parquet", "--out", "r.parquet", "--shard", "1"])
    old = parser.parse_args(["relax", "--table", "t.parquet", "--out", "r.parquet", "--shard", "1"])
    assert new.func is old.func is cli._relax
    assert (new.table, new.out, new.shard) == (old.table, old.out, old.shard)
