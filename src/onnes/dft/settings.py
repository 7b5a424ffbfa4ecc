"""The ``dft`` config block as a typed object (defaults live in the config schema)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class DftSettings:
    code: str = "cp2k"
    calculation: str = "relax"  # "static" (single point) or "relax" (relax, then static)
    top_k: int = 2
    max_sites: int = 20
    retries: int = 1
    exclude_elements: tuple[str, ...] = ()
    store: dict[str, Any] = field(default_factory=lambda: {"type": "json"})
    cp2k: dict[str, Any] = field(default_factory=dict)
    vasp: dict[str, Any] = field(default_factory=dict)

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
            exclude_elements=tuple(block["exclude_elements"]),
            store=dict(block["store"]),
            cp2k=dict(block["cp2k"]),
            vasp=dict(block["vasp"]),
        )
