"""Lazy public names for packages whose modules import torch (PEP 562).

``wassnet --help`` imports the command modules, which live inside the packages
``wassnet.w1``, ``wassnet.gan`` and ``wassnet.certify``; importing a package runs its
``__init__``. With :func:`lazy_exports` an ``__init__`` only records where each public
name lives, and the defining module (and torch) is imported on first use of a name.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: dict[str, list[str]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` from ``{module: [names]}``.

    ``module`` is relative to ``package`` (``".estimate"``) or absolute. Each name is
    imported from its module the first time it is read, then cached in the package.
    """
    where = {name: module for module, names in exports.items() for name in names}
    names = sorted(where)

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(where[name], package), name)
        setattr(import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return names

    return names, __getattr__, __dir__
