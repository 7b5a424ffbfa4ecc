"""Formation energies and energy above the convex hull on the Materials Project footing.

The reference hull lives in formation-energy space: every reference compound enters as
its DFT formation energy per atom (MP2020-corrected, from the mirror's ``hull_refs`` and
from curated MPTS-52 / WBM tables), every element at 0. A candidate's formation energy
is its total energy minus the MP elemental reference energies (the 2023-02-07 MP
elemental entries, also MP2020-consistent) per atom.

CHGNet 0.3.0 is trained on MPtrj's MP2020-*corrected* energies, so its predictions are
already on that footing: applying the corrections again doubled them (formation-energy
MAE against MP 0.180 eV/atom with, 0.024 without, 300 MP-20 structures;
``benchmarks/hull_check.py``). Raw GGA/GGA+U energies (VASP) go through
``mp2020_corrected_energy`` first.

Hulls are evaluated per chemical system from the references whose elements lie inside
it (the selection is cached). A candidate with an element that has no elemental reference is flagged
(``hull_status``), never given an invented reference.
"""

from __future__ import annotations

import gzip
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Element, Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from onnes.io import read_parquet

# Atom fractions are indexed by Z and element sets are two 64-bit masks: slots for Z < 128,
# every element there is (the campaign's range is onnes.elements.MAX_Z).
Z_SLOTS = 128


def elemental_potentials(path: str | Path) -> dict[str, float]:
    """Energy per atom (eV) of each element's MP reference entry, from its JSON dicts."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as handle:
        entries = json.load(handle)
    return {symbol: ComputedEntry.from_dict(d).energy_per_atom for symbol, d in entries.items()}


def mp_run_parameters(composition: Composition) -> dict:
    """The run type MP's input sets give a composition: GGA+U with MP's U values for
    oxides and fluorides of Co, Cr, Fe, Mn, Mo, Ni, V, W; GGA otherwise."""
    from pymatgen.io.vasp.sets import MPRelaxSet

    symbols = {el.symbol for el in composition}
    anion = "O" if "O" in symbols else "F" if "F" in symbols else None
    u_values = MPRelaxSet.CONFIG["INCAR"]["LDAUU"].get(anion, {}) if anion else {}
    hubbards = {el: u for el, u in u_values.items() if el in symbols}
    return {"run_type": "GGA+U" if hubbards else "GGA", "hubbards": hubbards, "is_hubbard": bool(hubbards)}


def _mp2020_processed(entry: ComputedEntry) -> ComputedEntry:
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processed = MaterialsProject2020Compatibility(check_potcar=False).process_entry(entry)
    if processed is None:
        raise ValueError(f"MP2020 compatibility rejected {entry.composition.reduced_formula}")
    return processed


def mp2020_corrected_energy(structure: Structure, energy: float, parameters: dict | None = None) -> float:
    """Total energy with MP2020 anion and GGA/GGA+U mixing corrections (Wang et al.,
    Sci. Rep. 11, 15496, 2021), for raw GGA/GGA+U energies computed with MP settings
    (VASP, or an MLIP trained on them). Without ``parameters`` the run type follows MP's
    input sets (:func:`mp_run_parameters`)."""
    parameters = parameters or mp_run_parameters(structure.composition)
    return _mp2020_processed(ComputedStructureEntry(structure, energy, parameters=parameters)).energy


def mp2020_correction_per_atom(composition: Composition) -> float:
    """The MP2020 correction per atom (eV, usually negative) of a composition without its
    structure (oxide anions taken as plain oxide): what lifts a raw energy's hull
    reference off the corrected hull, for early rejection of raw-footing relaxations."""
    entry = ComputedEntry(composition, 0.0, parameters=mp_run_parameters(composition))
    return _mp2020_processed(entry).correction / composition.num_atoms


def element_counts(species) -> dict[str, int]:
    """Element counts from a list of symbols or atomic numbers."""
    out = Counter()
    for s in species:
        out[Element.from_Z(int(s)).symbol if not isinstance(s, str) else s] += 1
    return dict(out)


def build_references(mp20_path: str | Path, curated: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per reference compound: id, source, composition (JSON), formation energy.

    ``mp20_path`` is the mirror's MP-20 formation-energy table; ``curated`` maps a data
    set name to its curated crystal table (rows without ``e_form_per_atom`` are skipped).
    """
    mp20 = read_parquet(mp20_path, columns=["material_id", "species_at_sites", "formation_energy_per_atom"])
    frames = [pd.DataFrame({
        "id": mp20.material_id,
        "source": "mp20_hull_refs",
        "counts": mp20.species_at_sites.map(element_counts),
        "e_form_per_atom": mp20.formation_energy_per_atom.astype(float),
    })]
    for name, table in (curated or {}).items():
        if "e_form_per_atom" not in table:
            continue
        ids = table["material_id"].fillna(table["id"]) if "material_id" in table else table["id"]
        frames.append(pd.DataFrame({
            "id": ids.values, "source": name, "counts": table.species.map(element_counts).values,
            "e_form_per_atom": table.e_form_per_atom.astype(float).values,
        }))
    refs = pd.concat(frames, ignore_index=True)
    refs = refs[np.isfinite(refs.e_form_per_atom)].drop_duplicates("id", keep="first")
    refs["composition"] = refs.pop("counts").map(lambda c: json.dumps(c, sort_keys=True))
    return refs.reset_index(drop=True)


class ConvexHull:
    """The lower convex hull of formation energy over composition, per chemical system.

    The hull energy at a composition c is a linear program: the cheapest mixture of
    reference phases with that overall composition,
        E_hull(c) = min_x sum_k x_k E_k  subject to  sum_k x_k f_k = c,  x >= 0,
    where f_k are the atom fractions and E_k the formation energies per atom of the
    references inside the chemical system (elements at 0). Its value equals
    pymatgen's PhaseDiagram construction (tested), but costs one small LP instead of a
    Qhull triangulation, which grows steeply with the number of elements (a 7-element
    generated composition took minutes).
    """

    def __init__(self, references: pd.DataFrame, potentials: dict[str, float]):
        self.potentials = potentials
        self.energies = references.e_form_per_atom.to_numpy(float)
        self.ids = references.id.astype(str).tolist()
        self.fractions = np.zeros((len(references), Z_SLOTS))  # (refs, Z) atom fractions
        self.formulas = []
        for k, text in enumerate(references.composition):
            composition = Composition(json.loads(text))
            self.formulas.append(composition.reduced_formula)
            for el, n in composition.items():
                self.fractions[k, el.Z] = n / composition.num_atoms
        # Element sets as two 64-bit masks: a reference lies in a chemical system when
        # it has no bit outside the system's mask, one vectorised test over all refs.
        present = self.fractions > 0
        weights = np.uint64(1) << np.arange(64, dtype=np.uint64)
        self.masks = np.stack([(present[:, :64] * weights).sum(1, dtype=np.uint64),
                               (present[:, 64:] * weights).sum(1, dtype=np.uint64)], 1)
        self._cache: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, list[str]]] = {}

    @classmethod
    def from_files(cls, references: str | Path, elements: str | Path) -> "ConvexHull":
        """The hull from the ``hull_references.parquet`` table and the MP elemental
        reference entries (the files the screen and DFT stages are given)."""
        return cls(read_parquet(references), elemental_potentials(elements))

    def missing(self, composition: Composition) -> list[str]:
        return sorted(el.symbol for el in composition if el.symbol not in self.potentials)

    def _system(self, numbers: tuple[int, ...]):
        """(fractions (refs, elements), energies, names) inside one chemical system, elements included."""
        if numbers not in self._cache:
            inside = self._inside(numbers)
            fractions = np.vstack([np.eye(len(numbers)), self.fractions[np.ix_(inside, list(numbers))]])
            energies = np.concatenate([np.zeros(len(numbers)), self.energies[inside]])
            names = [Element.from_Z(z).symbol for z in numbers] + [self.formulas[k] for k in inside]
            self._cache[numbers] = (fractions, energies, names)
        return self._cache[numbers]

    def _solve(self, composition: Composition):
        """(element numbers, the LP's result) at ``composition``: weights x over the
        system's elements, then its references (``_system``'s order)."""
        from scipy.optimize import linprog

        numbers = tuple(sorted(el.Z for el in composition))
        fractions, energies, _ = self._system(numbers)
        target = np.array([composition.get_atomic_fraction(Element.from_Z(z)) for z in numbers])
        result = linprog(energies, A_eq=fractions.T, b_eq=target, bounds=(0, None), method="highs")
        if not result.success:
            raise RuntimeError(f"hull LP failed for {composition.reduced_formula}: {result.message}")
        return numbers, result

    def hull_energy(self, composition: Composition) -> tuple[float, list[tuple[str, float]]]:
        """Hull formation energy per atom at ``composition`` and the phases (name,
        atom fraction) it decomposes into."""
        numbers, result = self._solve(composition)
        names = self._system(numbers)[2]
        phases = [(names[k], float(x)) for k, x in enumerate(result.x) if x > 1e-9]
        return float(result.fun), phases

    def decomposition(self, composition: Composition) -> list[tuple[str | None, str, float]]:
        """The phases the hull at ``composition`` is made of: (reference id, formula, atom
        fraction). An element stands for its ground state: the id of its lowest reference
        entry when that lies at the elemental energy (formation energy 0), else None."""
        numbers, result = self._solve(composition)
        inside = self._inside(numbers)
        phases = []
        for k, x in enumerate(result.x):
            if x <= 1e-9:
                continue
            if k < len(numbers):  # an element at its reference energy
                symbol = Element.from_Z(numbers[k]).symbol
                phases.append((self.ground_state(symbol), symbol, float(x)))
            else:
                index = inside[k - len(numbers)]
                phases.append((self.ids[index], self.formulas[index], float(x)))
        return phases

    def ground_state(self, symbol: str) -> str | None:
        """The reference id of an element's ground state (formation energy 0 within 1 meV/atom)."""
        z = Element(symbol).Z
        pure = np.flatnonzero((self.fractions[:, z] > 1 - 1e-9))
        if not len(pure):
            return None
        best = pure[np.argmin(self.energies[pure])]
        return self.ids[best] if abs(self.energies[best]) <= 1e-3 else None

    def _inside(self, numbers: tuple[int, ...]) -> np.ndarray:
        system = np.zeros(2, dtype=np.uint64)
        for z in numbers:
            system[z // 64] |= np.uint64(1) << np.uint64(z % 64)
        return np.flatnonzero(((self.masks & ~system) == 0).all(axis=1))

    def elemental_energy_per_atom(self, composition: Composition) -> float:
        """Energy per atom (eV, MP2020 footing) of the composition's elements in their reference states."""
        return sum(self.potentials[el.symbol] * n for el, n in composition.items()) / composition.num_atoms

    def formation_energy(self, composition: Composition, energy: float) -> float:
        """Formation energy per atom (eV) of a total energy on the MP2020 footing."""
        return energy / composition.num_atoms - self.elemental_energy_per_atom(composition)

    def e_above_hull(self, composition: Composition, e_form_per_atom: float) -> tuple[float, str]:
        """(energy above the hull in eV/atom, decomposition products) for one candidate;
        negative below the current hull."""
        e_hull, phases = self.hull_energy(composition)
        return e_form_per_atom - e_hull, " + ".join(sorted(name for name, _ in phases))


def evaluate_stability(table: pd.DataFrame, hull: ConvexHull, footing: str = "mp2020",
                       energy_column: str = "energy") -> pd.DataFrame:
    """Formation energy, e_above_hull, decomposition and ``hull_status`` for each row of a
    relaxed crystal table, its energies on the MLIP's ``footing`` (raw energies get the
    MP2020 corrections first); rows without an energy get status ``no_energy``."""
    from onnes.crystals import to_structure

    out = {"e_form_per_atom": [], "e_above_hull": [], "decomposition": [], "hull_status": []}
    for _, row in table.iterrows():
        energy = row.get(energy_column)
        e_form = e_hull = np.nan
        products, status = None, "ok"
        if energy is None or not np.isfinite(energy):
            status = "no_energy"
        else:
            composition = Composition(element_counts(row["species"]))
            missing = hull.missing(composition)
            if missing:
                status = "missing_reference: " + ",".join(missing)
            if status == "ok" and footing == "raw":
                try:
                    energy = mp2020_corrected_energy(to_structure(row), float(energy))
                except ValueError as exc:  # MP2020 compatibility refused the entry
                    status = f"no_correction: {exc}"
            if status == "ok":
                e_form = hull.formation_energy(composition, float(energy))
                e_hull, products = hull.e_above_hull(composition, e_form)
        out["e_form_per_atom"].append(e_form)
        out["e_above_hull"].append(e_hull)
        out["decomposition"].append(products)
        out["hull_status"].append(status)
    return pd.DataFrame(out, index=table.index)
