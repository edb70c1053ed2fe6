"""wassnet: provably 1-Lipschitz networks for W1 estimation, WGANs and certified classification.

Importing ``wassnet`` is cheap (no torch): the public names below are loaded on first
use.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from wassnet._lazy import lazy_exports

try:
    __version__ = version("wassnet")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "wassnet.w1": ["PopulationOptions", "SampleOptions", "W1Result", "estimate_w1"],
        "wassnet.critics": ["conv_critic", "dense_critic", "make_critic"],
    },
)
__all__ = ["__version__", *__all__]
