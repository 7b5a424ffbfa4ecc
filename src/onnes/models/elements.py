"""Chemical descriptors of the elements in a model's vocabulary.

Charge neutrality, the first test a generated composition must pass, is a statement
about oxidation states, and a learned one-hot embedding has to discover each element's
chemistry from the cells it appears in (most elements appear in a few hundred MP-20
cells). These descriptors give every element its Pauling electronegativity, period,
group, metal flag, atomic radius and common oxidation states (pymatgen's data), so what
is learned for one element carries over to chemically similar ones (as element
descriptors do in composition models such as Roost, Goodall & Lee 2020).
"""

from __future__ import annotations

import warnings

import numpy as np
from pymatgen.core import Element

OXIDATION_STATES = tuple(range(-4, 9))  # one column per common oxidation state
NUM_FEATURES = 5 + len(OXIDATION_STATES)


def element_features(atomic_numbers) -> np.ndarray:
    """(K, NUM_FEATURES) float32: standardised electronegativity, period, group and
    radius (missing values at the mean), metal flag, common oxidation states one-hot."""
    rows = []
    for z in atomic_numbers:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns about missing data (noble gases)
            element = Element.from_Z(int(z))
            radius = element.atomic_radius
            states = set(element.common_oxidation_states)
            rows.append([float(element.X), float(element.row), float(element.group),
                         float(radius) if radius is not None else np.nan, float(element.is_metal),
                         *(float(q in states) for q in OXIDATION_STATES)])
    table = np.asarray(rows, dtype=np.float64).reshape(-1, NUM_FEATURES)
    continuous = table[:, :4]
    mean = np.nanmean(continuous, axis=0) if len(table) else np.zeros(4)
    std = np.nanstd(continuous, axis=0) if len(table) else np.ones(4)
    table[:, :4] = np.nan_to_num((continuous - mean) / np.where(std > 0, std, 1.0))
    return table.astype(np.float32)
