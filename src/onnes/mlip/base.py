"""The MLIP interface, its registry and a generic adapter for ASE calculators.

An MLIP evaluates a batch of cells in two steps: :meth:`MLIP.prepare` turns one cell
(atomic numbers, fractional coordinates, lattice rows) into whatever the network eats (a
graph), raising ``ValueError`` for a cell it cannot take (isolated atoms, a singular
cell), and :meth:`MLIP.evaluate` runs the network once on a list of prepared cells. The
relaxer prepares every cell at every step, because positions and cells move.

Units and signs are ASE's: energies in eV, forces in eV/A (-dE/dr), stresses in eV/A^3
as (1/V) dE/d(strain), a full 3 x 3 tensor per cell.

The energy *footing* says what an energy must go through before it meets the Materials
Project hull (:mod:`onnes.screen.hull`): ``mp2020`` for potentials trained on
MP2020-corrected energies (CHGNet: MPtrj), ``raw`` for potentials trained on raw
GGA/GGA+U energies, which get the MP2020 corrections first (SevenNet-0, 7net-l3i5).
``benchmarks/hull_check.py --calculator NAME`` measures it: the formation-energy MAE
against MP-20's DFT values with and without corrections.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any, ClassVar

import numpy as np

FOOTINGS = ("mp2020", "raw")
ENTRY_POINT_GROUP = "onnes.mlips"

# name -> class, or "module:Class" imported on first use (torch and the MLIP's package
# load only when a relaxation runs, not when the config is checked)
_REGISTRY: dict[str, type | str] = {
    "chgnet": "onnes.mlip.chgnet:CHGNetMLIP",
    "sevennet-0": "onnes.mlip.sevennet:SevenNet0",
    "sevennet-l3i5": "onnes.mlip.sevennet:SevenNetL3i5",
}


class UnknownMLIP(ValueError):
    """A calculator name that no registry entry or entry point provides."""


class MLIP(ABC):
    """One machine-learned potential, loaded on a device.

    Subclasses set the class attributes ``footing``, ``package`` (the distribution that
    provides the potential, for its version) and ``weights`` (which checkpoint), and,
    once loaded, ``elements`` (the atomic numbers it was trained on).
    """

    name: ClassVar[str] = ""
    footing: ClassVar[str] = "mp2020"
    package: ClassVar[str] = ""
    weights: ClassVar[str] = ""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.elements: frozenset[int] = frozenset()

    @abstractmethod
    def prepare(self, numbers: np.ndarray, frac: np.ndarray, lattice: np.ndarray) -> Any:
        """The network's input for one cell; ValueError when the cell cannot be taken."""

    @abstractmethod
    def evaluate(self, prepared: list) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """(total energies (B,) eV, forces per cell (n_i, 3) eV/A, stresses (B, 3, 3) eV/A^3)."""

    def unknown_elements(self, numbers) -> list[int]:
        """Atomic numbers of ``numbers`` the potential was not trained on."""
        return sorted({int(z) for z in numbers} - self.elements)

    @classmethod
    def describe(cls) -> dict:
        """Name, package version, weights and footing (the protocol block of funnel.json),
        without loading the weights."""
        try:
            package = f"{cls.package} {version(cls.package)}" if cls.package else ""
        except PackageNotFoundError:
            package = f"{cls.package} (not installed)"
        return {"name": cls.name, "package": package, "weights": cls.weights, "footing": cls.footing}


class AseCalculatorMLIP(MLIP):
    """Any ASE calculator as an MLIP, one cell per call: the way in for potentials whose
    packages offer only a calculator (MACE, ORB, MatterSim, UMA). Subclasses implement
    :meth:`calculator` (and set ``elements``); no batching, one cell per call."""

    @abstractmethod
    def calculator(self):
        """An ASE calculator (may be the same object every call)."""

    def prepare(self, numbers, frac, lattice):
        from ase import Atoms

        return Atoms(numbers=np.asarray(numbers), scaled_positions=frac, cell=lattice, pbc=True)

    def evaluate(self, prepared):
        from ase.stress import voigt_6_to_full_3x3_stress

        energies, forces, stresses = [], [], []
        for atoms in prepared:
            atoms.calc = self.calculator()
            energies.append(atoms.get_potential_energy())
            forces.append(np.asarray(atoms.get_forces(), dtype=float))
            stresses.append(voigt_6_to_full_3x3_stress(atoms.get_stress()))
        return np.asarray(energies, dtype=float), forces, np.asarray(stresses, dtype=float).reshape(-1, 3, 3)


def register_mlip(name: str, cls: type | str) -> None:
    """Make ``cls`` (an :class:`MLIP` subclass, or "module:Class") loadable as ``name``."""
    _REGISTRY[name] = cls


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def mlip_names() -> list[str]:
    """Every name :func:`load_mlip` takes: built in, registered, and from entry points."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def mlip_class(name: str) -> type[MLIP]:
    """The class registered as ``name`` (imports it on first use)."""
    target = _REGISTRY.get(name)
    if target is None:
        point = _entry_points().get(name)
        if point is None:
            raise UnknownMLIP(f"unknown MLIP '{name}' (known: {', '.join(mlip_names())}); add one with "
                              f"onnes.mlip.register_mlip or the '{ENTRY_POINT_GROUP}' entry-point group")
        target = point.load()
    if isinstance(target, str):
        module, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module), attribute)
    if not (isinstance(target, type) and issubclass(target, MLIP)):
        raise TypeError(f"MLIP '{name}' is {target!r}, not a subclass of onnes.mlip.MLIP")
    if target.footing not in FOOTINGS:
        raise ValueError(f"MLIP '{name}' declares footing '{target.footing}'; one of {FOOTINGS}")
    _REGISTRY[name] = target
    return target


def load_mlip(name: str, device: str = "cpu") -> MLIP:
    """The potential registered as ``name``, loaded on ``device``."""
    model = mlip_class(name)(device)
    model.name = name
    return model


def describe_mlip(name: str) -> dict:
    """:meth:`MLIP.describe` of the potential registered as ``name``, under that name."""
    return {**mlip_class(name).describe(), "name": name}
