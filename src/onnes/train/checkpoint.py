"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with
``torch.load(weights_only=True)`` (no pickle of arbitrary objects)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from onnes.io import atomic_path

FORMAT = "onnes-model/1"


def _plain(value: Any) -> Any:
    """Settings as plain dicts, all the way down: ``weights_only`` loading takes only plain
    containers, and a stage's settings arrive as ``onnes.config.StageSlice``. A module's
    state dict (an OrderedDict, with its version metadata) is kept as it is."""
    if isinstance(value, OrderedDict):
        return value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_plain(item) for item in value)
    return value


def save(state: dict[str, Any], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(_plain({"format": FORMAT, **state}), tmp)


def load(path: str | Path, map_location="cpu") -> dict[str, Any]:
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: not an onnes checkpoint (format {state.get('format')!r})")
    return state
