"""A candidate's energy above its own decomposition products, all computed by one code at
one set of settings: a self-consistent local hull for codes whose total energies cannot
share the MP hull (CP2K's GTH pseudopotentials and basis sets).

The products are the phases the campaign's hull (MP2020 formation energies) says the
candidate's composition decomposes into; each is computed like the candidate when its
structure is on hand among the campaign's known crystals (an element by its MP ground
state), and

    e_above_hull_dft_local = E_candidate / atom - sum_k x_k E_k / atom,

x_k the products' atom fractions. It measures the candidate against the MP ground-state
products only, not against every phase the code would find stable; the feedback of
rounds (:mod:`onnes.dft.feedback`) places it that far above the MP hull.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition

from onnes.screen.hull import ConvexHull, element_counts

log = logging.getLogger(__name__)


def known_by_id(known: pd.DataFrame) -> dict[str, pd.Series]:
    """Known crystals by id, also without their data-set prefix (``mp20:mp-149`` is found
    as ``mp-149``, the hull references' id)."""
    rows = {}
    for _, row in known.iterrows():
        identifier = str(row["id"])
        rows.setdefault(identifier, row)
        rows.setdefault(identifier.split(":", 1)[-1], row)
    return rows


def products_on_hand(row, hull: ConvexHull, known: dict[str, pd.Series]):
    """(products [(id, formula, fraction, structure row)], why not) for one candidate."""
    composition = Composition(element_counts(row["species"]))
    if hull.missing(composition):
        return None, f"no elemental reference for {', '.join(hull.missing(composition))}"
    products, missing = [], []
    for identifier, formula, fraction in hull.decomposition(composition):
        if identifier is None or identifier not in known:
            missing.append(f"{formula} ({identifier or 'no ground-state entry'})")
            continue
        products.append((identifier, formula, fraction, known[identifier]))
    if missing:
        return None, "product structure not on hand: " + ", ".join(missing)
    return products, None


def local_hull(row, record: dict, settings, work_dir: Path, hull: ConvexHull, known: dict[str, pd.Series],
               run, cp2k_data_dir=None) -> dict:
    """Fields for the candidate's record: its products' calculations
    (``dft_local_products``, JSON), ``e_above_hull_dft_local`` and ``dft_local_status``.
    ``run`` is the runner's ``run_candidate`` (each product runs as a candidate does,
    under ``work_dir/products/{id}/``)."""
    products, why_not = products_on_hand(row, hull, known)
    if products is None:
        return {"dft_local_status": why_not, "e_above_hull_dft_local": np.nan}
    done, energy = [], 0.0
    for identifier, formula, fraction, structure_row in products:
        safe = identifier.replace("/", "_").replace(":", "_")
        product = pd.Series({**structure_row.to_dict(), "id": identifier})
        result = run(product, settings, work_dir / "products" / safe, cp2k_data_dir)
        done.append({"id": identifier, "formula": formula, "fraction": fraction,
                     "status": result["dft_status"], "energy_per_atom": result.get("dft_energy_per_atom"),
                     "error": result.get("dft_error")})
        if result["dft_status"] != "success":
            return {"dft_local_products": json.dumps(done), "e_above_hull_dft_local": np.nan,
                    "dft_local_status": f"product {formula} ({identifier}) {result['dft_status']}"}
        energy += fraction * result["dft_energy_per_atom"]
    e_above = record["dft_energy_per_atom"] - energy
    log.info("%s: %.4f eV/atom above %s at the same settings", row["id"], e_above,
             " + ".join(p["formula"] for p in done))
    return {"dft_local_products": json.dumps(done), "e_above_hull_dft_local": float(e_above),
            "dft_local_status": "ok"}
