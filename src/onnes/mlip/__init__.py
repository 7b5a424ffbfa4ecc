"""Machine-learned interatomic potentials behind one interface (:class:`MLIP`).

The relaxer (:mod:`onnes.screen.relax`) and the stability stage know a potential only
through this interface: its name and version, the elements it knows, its energy footing
(MP2020-corrected or raw GGA/GGA+U), and batched energies, forces and stresses. Built in:
``chgnet`` (CHGNet 0.3.0), ``sevennet-0`` and ``sevennet-l3i5`` (weights in the sevenn
wheel). Others plug in with :func:`register_mlip` or the ``onnes.mlips`` entry-point group.
"""

from onnes.mlip.base import (
    FOOTINGS,
    MLIP,
    AseCalculatorMLIP,
    UnknownMLIP,
    describe_mlip,
    load_mlip,
    mlip_class,
    mlip_names,
    register_mlip,
)

__all__ = ["FOOTINGS", "MLIP", "AseCalculatorMLIP", "UnknownMLIP", "describe_mlip", "load_mlip", "mlip_class", "mlip_names",
           "register_mlip"]
