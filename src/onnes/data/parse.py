"""Turn one raw record (a CIF string) into a crystal-table row, or a reasoned rejection.

Malformed input never raises out of :func:`parse_record`; it returns a rejection with a
reason from ``DROP_REASONS`` and a short detail, so curation can count every drop.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymatgen.core import Structure
from pymatgen.core.periodic_table import Element
from pymatgen.io.cif import CifFile, CifParser

from onnes.crystals import MAX_VOLUME_PER_ATOM, structure_columns

# Order = order of the checks. "duplicate" is assigned later, by curation.
DROP_REASONS = (
    "parse_error",  # not a CIF, truncated, missing cell or site data
    "unknown_element",  # a symbol that names no element
    "non_finite_lattice",  # NaN/inf cell parameters or coordinates
    "no_atoms",  # a cell without sites
    "degenerate_cell",  # zero or tiny volume, an angle outside (0, 180) degrees
    "implausible_cell",  # far too much volume per atom for a solid (max_volume_per_atom)
    "partial_occupancy",  # disordered sites (e.g. 3DSC synth_doped)
    "disallowed_element",  # outside the configured element set
    "too_many_atoms",  # more sites than max_atoms
    "overlapping_atoms",  # two sites closer than min_distance
    "duplicate",  # StructureMatcher-equivalent to a kept structure
)

_CELL_KEYS = (
    "_cell_length_a",
    "_cell_length_b",
    "_cell_length_c",
    "_cell_angle_alpha",
    "_cell_angle_beta",
    "_cell_angle_gamma",
)
_SYMBOL = re.compile(r"^([A-Z][a-z]?)")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(\(\d+\))?$")


@dataclass(frozen=True)
class Checks:
    """The structural filters of curation (from the ``data`` config section)."""

    allowed_elements: frozenset[str]
    max_atoms: int
    min_distance: float = 0.5
    min_volume: float = 0.1
    # A cell with more than this per atom is a unit mistake (Bohr, nm) or a scaled-up
    # error, not a crystal (the shared row check's bound; data.max_volume_per_atom).
    max_volume_per_atom: float = MAX_VOLUME_PER_ATOM


class Rejected(Exception):
    def __init__(self, reason: str, detail: str):
        assert reason in DROP_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _cif_number(text: str) -> float:
    """A CIF numeric value, standard uncertainty stripped ('5.431(2)' -> 5.431)."""
    text = text.strip()
    if text.lower() in {"nan", "inf", "-inf", "+inf"}:
        return float(text)
    if not _NUMBER.match(text):
        raise ValueError(text)
    return float(text.split("(")[0])


def _cell_volume(a, b, c, alpha, beta, gamma) -> float:
    ca, cb, cg = (math.cos(math.radians(x)) for x in (alpha, beta, gamma))
    radicand = 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg
    return a * b * c * math.sqrt(max(radicand, 0.0))


def precheck_cif(text: str) -> None:
    """Classify the faults CifParser would hide or report vaguely."""
    if not isinstance(text, str):
        raise Rejected("parse_error", f"no CIF text (a {type(text).__name__}: {str(text)[:40]})")
    if not text.strip():
        raise Rejected("parse_error", "empty CIF")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks = list(CifFile.from_str(text).data.values())
    except Exception as exc:  # the CIF tokenizer raises assorted errors
        raise Rejected("parse_error", f"unreadable CIF: {type(exc).__name__}: {exc}") from None
    if not blocks:
        raise Rejected("parse_error", "no data block")
    data = blocks[0].data
    missing = [k for k in (*_CELL_KEYS, "_atom_site_fract_x") if k not in data]
    if missing:
        raise Rejected("parse_error", f"missing {', '.join(missing)} (truncated CIF?)")
    try:
        cell = [_cif_number(data[k]) for k in _CELL_KEYS]
    except (ValueError, TypeError) as exc:
        raise Rejected("parse_error", f"non-numeric cell parameter {exc}") from None
    if not all(math.isfinite(x) for x in cell):
        raise Rejected("non_finite_lattice", f"cell parameters {cell}")
    bad_angles = [x for x in cell[3:] if not 0.0 < x < 180.0]
    if bad_angles:
        raise Rejected("degenerate_cell", f"cell angles {bad_angles} outside (0, 180) degrees")
    volume = _cell_volume(*cell)
    if volume < 1e-6:
        raise Rejected("degenerate_cell", f"cell parameters {cell} give volume {volume:.3g} A^3")
    _check_sites(data)
    symbols = data.get("_atom_site_type_symbol") or data.get("_atom_site_label") or []
    for raw in [symbols] if isinstance(symbols, str) else symbols:
        match = _SYMBOL.match(raw)
        if not match or not Element.is_valid_symbol(match.group(1)):
            raise Rejected("unknown_element", f"site symbol '{raw}'")


def _check_sites(data: dict) -> None:
    """The atom-site loop: columns of one length, finite numeric coordinates."""
    columns = {k: [v] if isinstance(v, str) else list(v) for k, v in data.items() if k.startswith("_atom_site_")
               and not k.startswith(("_atom_site_aniso", "_atom_site_fract_"))}
    coords = [[v] if isinstance(v, str) else list(v) for v in
              (data.get(f"_atom_site_fract_{axis}", []) for axis in "xyz")]
    lengths = {k: len(v) for k, v in columns.items()} | {f"_atom_site_fract_{a}": len(c) for a, c in zip("xyz", coords)}
    if len(set(lengths.values())) > 1:
        raise Rejected("parse_error", f"atom-site loop columns of different lengths {lengths} (truncated CIF?)")
    try:
        numbers = [_cif_number(v) for column in coords for v in column]
    except (ValueError, TypeError) as exc:
        raise Rejected("parse_error", f"non-numeric fractional coordinate {exc}") from None
    if not all(math.isfinite(x) for x in numbers):
        raise Rejected("non_finite_lattice", "NaN or infinite fractional coordinates")


def parse_cif(text: str) -> Structure:
    precheck_cif(text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structures = CifParser.from_str(text).parse_structures(primitive=False, on_error="raise")
    except Exception as exc:
        raise Rejected("parse_error", f"{type(exc).__name__}: {exc}") from None
    if len(structures) != 1:
        raise Rejected("parse_error", f"{len(structures)} structures in one record")
    return structures[0]


def check_structure(structure: Structure, checks: Checks) -> None:
    """Raise :class:`Rejected` unless ``structure`` is a sane crystal under ``checks``.

    The one definition of a sane crystal: curation and ``onnes data import`` both use it.
    """
    matrix = structure.lattice.matrix
    if not (np.isfinite(matrix).all() and np.isfinite(structure.frac_coords).all()):
        raise Rejected("non_finite_lattice", "NaN or infinite lattice or coordinates")
    if len(structure) == 0:
        raise Rejected("no_atoms", "the cell has no sites")
    volume = abs(float(np.linalg.det(matrix)))
    if volume < checks.min_volume:
        raise Rejected("degenerate_cell", f"volume {volume:.3g} A^3 < {checks.min_volume}")
    if volume / len(structure) > checks.max_volume_per_atom:
        raise Rejected("implausible_cell", f"{volume / len(structure):.3g} A^3 per atom > "
                       f"max_volume_per_atom {checks.max_volume_per_atom}")
    if not structure.is_ordered:
        raise Rejected("partial_occupancy", f"disordered composition {structure.composition}")
    outside = sorted({el.symbol for el in structure.composition.elements} - checks.allowed_elements)
    if outside:
        raise Rejected("disallowed_element", f"elements {outside} not allowed")
    if len(structure) > checks.max_atoms:
        raise Rejected("too_many_atoms", f"{len(structure)} sites > max_atoms {checks.max_atoms}")
    # Shortest distance: between two sites (minimum image) or from a site to its own
    # periodic image (the shortest lattice vector, found after LLL reduction).
    closest = float(min(structure.lattice.get_lll_reduced_lattice().abc))
    if len(structure) > 1:
        distances = structure.distance_matrix
        np.fill_diagonal(distances, np.inf)
        closest = min(closest, float(distances.min()))
    if closest < checks.min_distance:
        raise Rejected("overlapping_atoms", f"two sites {closest:.3f} A apart < {checks.min_distance}")


def parse_record(record: dict[str, Any], checks: Checks) -> dict[str, Any]:
    """Return a row: contract columns + labels, or ``{"id", "source", "drop_reason", ...}``.

    A record carries its crystal as CIF text (``cif``) or as a pymatgen ``structure``
    (formats read by other parsers); ``error`` is a :class:`Rejected` found while reading.
    """
    base = {"id": record["id"], "source": record["source"], **record.get("extra", {})}
    try:
        if record.get("error") is not None:
            raise record["error"]
        structure = record["structure"] if "structure" in record else parse_cif(record["cif"])
        check_structure(structure, checks)
        columns = structure_columns(structure)
    except Rejected as rejected:
        return {**base, "drop_reason": rejected.reason, "drop_detail": rejected.detail[:300]}
    except Exception as exc:  # never let one record stop curation
        return {**base, "drop_reason": "parse_error", "drop_detail": f"{type(exc).__name__}: {exc}"[:300]}
    composition = structure.composition
    return {
        **base,
        **columns,
        "num_sites": len(structure),
        "formula": composition.reduced_formula,
        "num_elements": len(composition.elements),
        "volume_per_atom": structure.volume / len(structure),
        **record.get("labels", {}),
    }
