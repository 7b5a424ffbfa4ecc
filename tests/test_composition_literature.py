"""Compositional validity agrees with SMACT's own ``smact_validity`` under the
literature's oxidation-state set (smact14), composition by composition."""

import math
import time
from functools import reduce

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Element
from smact.screening import smact_validity

from onnes.screen.composition import OXIDATION_STATE_SETS, _element, smact_valid

# SMACT enumerates every oxidation-state combination: keep the reference affordable.
MAX_COMBINATIONS = 20_000


def random_compositions(count: int, seed: int = 7) -> list[dict[str, int]]:
    """Compositions like a generative model's: 2-5 elements of H-Bi, 1-8 atoms each."""
    rng = np.random.default_rng(seed)
    symbols = [Element.from_Z(z).symbol for z in range(1, 84) if z not in (43, 61)]  # no Tc, Pm
    out = []
    while len(out) < count:
        k = int(rng.integers(2, 6))
        chosen = rng.choice(symbols, size=k, replace=False)
        out.append({str(s): int(n) for s, n in zip(chosen, rng.integers(1, 9, size=k))})
    return out


def mp20_compositions(mirror, count: int) -> list[dict[str, int]]:
    table = pd.read_csv(mirror / "mp20" / "pilot_test.csv.gz", usecols=["cif"])
    out = []
    for cif in table.cif.head(count):
        formula_line = next(line for line in cif.splitlines() if line.startswith("_chemical_formula_sum"))
        composition = Composition(formula_line.split(None, 1)[1].strip().strip("'\""))
        out.append({el.symbol: int(n) for el, n in composition.items()})
    return out


def combinations(counts: dict[str, int]) -> int:
    return math.prod(max(1, len(_element(s, "smact14")[0])) for s in counts)


def reference(counts: dict[str, int], oxidation_states: str) -> bool:
    divisor = reduce(math.gcd, counts.values())
    formula = "".join(f"{s}{n // divisor}" for s, n in counts.items())
    return smact_validity(Composition(formula), oxidation_states_set=oxidation_states)


def check_agreement(corpus, oxidation_states="smact14"):
    corpus = [c for c in corpus if combinations(c) <= MAX_COMBINATIONS]
    disagreements = [(c, smact_valid(c, oxidation_states)) for c in corpus
                     if smact_valid(c, oxidation_states) != reference(c, oxidation_states)]
    return corpus, disagreements


def test_agrees_with_smact_on_generated_compositions():
    corpus, disagreements = check_agreement(random_compositions(700))
    assert len(corpus) >= 500
    assert disagreements == []
    valid = sum(smact_valid(c) for c in corpus)
    assert 0.05 * len(corpus) < valid < 0.95 * len(corpus)  # the corpus exercises both answers


def test_agrees_with_smact_on_real_mp20_compositions(mirror):
    corpus, disagreements = check_agreement(mp20_compositions(mirror, 600))
    assert len(corpus) >= 500
    assert disagreements == []
    assert sum(smact_valid(c) for c in corpus) > 0.8 * len(corpus)  # real crystals mostly pass


@pytest.mark.parametrize("oxidation_states", sorted(set(OXIDATION_STATE_SETS) - {"smact14"}))
def test_other_oxidation_state_sets_agree_too(oxidation_states):
    corpus, disagreements = check_agreement(random_compositions(200, seed=11), oxidation_states)
    assert disagreements == []


def test_the_set_changes_answers():
    # OF2: smact14 lists O(+2), so oxygen can be the cation of fluorine; the ICSD-based
    # sets list no positive state for O.
    assert smact_valid({"O": 1, "F": 2}, "smact14") is True
    assert smact_valid({"O": 1, "F": 2}, "icsd24") is False
    with pytest.raises(ValueError, match="oxidation-state set"):
        smact_valid({"Na": 1, "Cl": 1}, "made_up")


def test_many_element_compositions_stay_fast():
    counts = {"Mn": 7, "Fe": 5, "Co": 3, "V": 4, "Cr": 6, "Ni": 5, "Re": 2, "Os": 3, "O": 29, "S": 3, "N": 2,
              "Ir": 1, "Ru": 2}
    assert combinations(counts) > 1e9  # SMACT's enumeration would take hours
    started = time.perf_counter()
    smact_valid(counts)
    assert time.perf_counter() - started < 2.0
