"""The ``dft`` config block as a typed object (defaults live in the config schema)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class DftSettings:
    """No defaults here: they live in the config schema; build with :meth:`from_config`."""

    code: str
    calculation: str  # "static" (single point) or "relax" (relax, then static)
    top_k: int
    max_sites: int
    retries: int
    local_hull: bool  # CP2K: also compute the candidate's hull decomposition products
    exclude_elements: tuple[str, ...]
    store: dict[str, Any]
    cp2k: dict[str, Any]
    vasp: dict[str, Any]

    def with_launcher(self, launcher: str | None) -> "DftSettings":
        """CP2K started through an MPI launcher (``srun`` on SLURM with several tasks).
        The VASP command names its launcher itself (``srun vasp_std``)."""
        if not launcher or self.code != "cp2k":
            return self
        return replace(self, cp2k={**self.cp2k, "command": f"{launcher} {self.cp2k['command']}"})

    @classmethod
    def from_config(cls, config: dict) -> "DftSettings":
        block = config["dft"]
        return cls(
            code=block["code"],
            calculation=block["calculation"],
            top_k=block["top_k"],
            max_sites=block["max_sites"],
            retries=block["retries"],
            local_hull=block["local_hull"],
            exclude_elements=tuple(block["exclude_elements"]),
            store=dict(block["store"]),
            cp2k=dict(block["cp2k"]),
            vasp=dict(block["vasp"]),
        )
