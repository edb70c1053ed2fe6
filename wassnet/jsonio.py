"""Strict JSON: what every file and ``--json`` output of wassnet is written as."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["strict_json"]


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by ``None``.

    JSON has no NaN or infinity: ``json.dumps`` would write the non-standard tokens
    ``NaN`` / ``Infinity`` that strict parsers reject; ``null`` is what they read.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value
