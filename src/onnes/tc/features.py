"""Descriptors for the Tc predictor.

Composition: Magpie element-property statistics (Ward et al., npj Comput. Mater. 2016;
132 numbers via matminer), stoichiometry p-norms and the element fractions themselves
(which element is present matters for Tc: Cu-O planes, Fe-pnictide layers), in the
spirit of the SuperCon models of Stanev 2018 and Hamidieh 2018. Structure, where a row has one: density,
volume per atom and space-group number. Rows without a structure (SuperCon) carry NaN
there, which gradient-boosted trees route as missing values.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from onnes.data.labels import parse_composition

log = logging.getLogger(__name__)

STRUCTURE_FEATURES = ("density", "volume_per_atom", "space_group")


def _composition_featurizer():
    from matminer.featurizers.base import MultipleFeaturizer
    from matminer.featurizers.composition import ElementFraction, ElementProperty, Stoichiometry

    return MultipleFeaturizer(
        [ElementProperty.from_preset("magpie", impute_nan=True), Stoichiometry(), ElementFraction()]
    )


def composition_feature_names() -> list[str]:
    return list(_composition_featurizer().feature_labels())


def composition_features(formulas: pd.Series, cache: dict | None = None) -> np.ndarray:
    """(n, F) Magpie + stoichiometry + element-fraction features; a row of NaN for an
    unparsable formula. ``cache`` (formula -> features) may be shared between calls."""
    featurizer = _composition_featurizer()
    width = len(featurizer.feature_labels())
    out = np.full((len(formulas), width), np.nan)
    cache = {} if cache is None else cache
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, formula in enumerate(formulas):
            if formula in cache:
                out[i] = cache[formula]
                continue
            composition = parse_composition(formula) if isinstance(formula, str) else None
            if composition is None:
                continue
            try:
                out[i] = cache[formula] = np.asarray(featurizer.featurize(composition), dtype=float)
            except Exception as exc:  # e.g. an element without Magpie data
                log.warning("no composition features for %s: %s", formula, exc)
    return out


def structure_features(table: pd.DataFrame) -> np.ndarray:
    """(n, 3) density (g/cm^3), volume per atom (A^3), space group (symprec 0.1);
    NaN for rows without a usable structure."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from onnes.crystals import to_structure

    out = np.full((len(table), len(STRUCTURE_FEATURES)), np.nan)
    if "lattice" not in table.columns:
        return out
    for i, (_, row) in enumerate(table.iterrows()):
        lattice = row["lattice"]
        if lattice is None or (isinstance(lattice, float) and np.isnan(lattice)):
            continue
        try:
            structure = to_structure(row)
            if not np.isfinite(structure.lattice.volume) or structure.lattice.volume <= 0:
                continue
            space_group = SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number()
            out[i] = (structure.density, structure.volume / len(structure), space_group)
        except Exception as exc:  # a degenerate cell: composition features still apply
            log.debug("no structure features for %s: %s", row.get("id"), exc)
    return out


def feature_matrix(table: pd.DataFrame, formula_column: str = "formula", cache: dict | None = None) -> np.ndarray:
    return np.hstack([composition_features(table[formula_column], cache), structure_features(table)])


def feature_names() -> list[str]:
    return composition_feature_names() + list(STRUCTURE_FEATURES)
