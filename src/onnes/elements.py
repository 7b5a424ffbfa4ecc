"""The element range a campaign works in, defined once.

Structures may hold elements up to Pu by default: the MP-trained potentials that relax
and confirm them (CHGNet, SevenNet) were fitted to Materials Project data, which covers
Z = 1..94. ``data.allowed_elements`` narrows or widens it per campaign; an MLIP states
its own range (``MLIP.elements``) and records ``relax_error`` for a structure
outside it.
"""

from __future__ import annotations

MAX_Z = 94  # Pu
