"""wassnet: provably 1-Lipschitz networks for W1 estimation, WGANs and certified classification.

Importing ``wassnet`` is cheap (no torch): the public names below are loaded on first
use.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("wassnet")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

#: public name -> the module that defines it (imported lazily, see ``__getattr__``)
_LAZY = {
    "estimate_w1": "wassnet.w1",
    "SampleOptions": "wassnet.w1",
    "PopulationOptions": "wassnet.w1",
    "W1Result": "wassnet.w1",
    "conv_critic": "wassnet.critics",
    "dense_critic": "wassnet.critics",
    "make_critic": "wassnet.critics",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wassnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
