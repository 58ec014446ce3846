"""Base class of geomrob's result dataclasses."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class Result:
    """Mixin for frozen result dataclasses: ``to_dict()`` gives JSON-ready nested lists."""

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain Python (tensors become nested lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
