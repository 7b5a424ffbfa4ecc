"""Predicted Tc of what a user brings: formulas, a CSV of formulas, or a crystal table.

``onnes tc predict`` is a thin wrapper: it reads the arguments, calls these and writes
the text. A formula that names no composition gets an empty prediction, counted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from onnes.config import ConfigError
from onnes.crystals import read_table
from onnes.tc.predictor import TcPredictor


def formula_csv(path: Path) -> pd.DataFrame:
    """(id, formula) from a CSV: its ``formula`` column, else its first; ``id`` if present."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if table.empty or not len(table.columns):
        raise ConfigError(f"{path}: no formulas")
    column = "formula" if "formula" in table else table.columns[0]
    ids = table["id"] if "id" in table else table[column]
    return pd.DataFrame({"id": ids.to_numpy(), "formula": table[column].str.strip().to_numpy()})


def formula_table(formulas: list[str] | None = None, csv: Path | None = None,
                  table: Path | None = None) -> pd.DataFrame:
    """The rows to predict, from exactly one of the three sources."""
    if sum([bool(formulas), csv is not None, table is not None]) != 1:
        raise ConfigError("give exactly one of: formulas on the command line, --csv FILE, --table FILE")
    if table is not None:
        rows = read_table(table)
        if "formula" not in rows:
            from onnes.matching import reduced_formulas

            rows["formula"] = reduced_formulas(rows)
        return rows
    if csv is not None:
        return formula_csv(csv)
    return pd.DataFrame({"id": formulas, "formula": formulas})


def predict_formulas(rows: pd.DataFrame, predictor: TcPredictor) -> pd.DataFrame:
    """id and formula beside the predictor's columns (mean, interval, P(SC), P(Tc > t))."""
    predictions = predictor.predict(rows)
    return pd.concat([rows[[c for c in ("id", "formula") if c in rows]].reset_index(drop=True),
                      predictions.reset_index(drop=True)], axis=1)


def as_text(predicted: pd.DataFrame, as_json: bool) -> str:
    """JSON records (four decimals) or CSV (three significant digits)."""
    if as_json:
        return json.dumps(json.loads(predicted.to_json(orient="records", double_precision=4)), indent=1) + "\n"
    return predicted.to_csv(index=False, float_format="%.3g")
