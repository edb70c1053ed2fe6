"""Critic families as a registry: a family is one entry, found by name.

The population bracket (:mod:`wassnet.w1.critic_fit`) fits several critic families on
each fold and keeps the best on validation. Each family is one
:class:`PopulationFamily` entry (name, network builder, closed-form start, fit routine,
what is done once it is kept, what its output reports) in one
:class:`FamilyRegistry`; the code that fits, refits and reports critics reads the entry,
never the family's name. A new family is one new entry (its name also goes into the
torch-free list of names the command line offers, :data:`wassnet.w1.options.CRITICS`).

:class:`FittedCritic` is what a fit returns, whichever the family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from wassnet.errors import InputError
from wassnet.norms import Norm

__all__ = ["FamilyRegistry", "FittedCritic", "PopulationFamily", "subspace_rows"]


@dataclass
class FittedCritic:
    """A critic fitted on one fold's training points.

    Attributes:
        name: the family kept (``linear``, ``radial``, ``transport``, ``dense``, ``conv``).
        module: the critic (float64, eval mode): ``module(x) / lipschitz`` is
            1-Lipschitz for the metric's norm, with ``lipschitz`` certified.
        lipschitz: certified upper bound on the module's Lipschitz constant.
        validation: validation dual of every family tried (float32, normalized by
            the family's nominal constant 1), the basis of the choice.
        steps: optimizer steps of every family tried.
        directions: for ``projection`` and ``subspace``, the unit (l2) rows spanning
            the subspace the critic reads (``[k, d]``, float64; ``k = 1`` for
            ``projection``: where the laws were found to differ); else ``None``.
    """

    name: str
    module: nn.Module
    lipschitz: float
    validation: dict[str, float]
    steps: dict[str, int]
    directions: np.ndarray | None = None


#: ``fit(family, fold) -> (critic, validation dual, optimizer steps)`` or ``None`` (the
#: family does not apply); ``fold`` is the caller's description of one fold's split.
FitRoutine = Callable[["PopulationFamily", Any], "tuple[nn.Module, float, int] | None"]
#: ``build(dim, options, norm) -> network`` on ``R^dim``, 1-Lipschitz in ``norm`` (a
#: :class:`wassnet.norms.Norm`; once projected when ``projected``); ``options`` are the
#: caller's (hidden widths, iterations...).
Builder = Callable[[int, Any, Norm], nn.Sequential]
#: ``start(critic, a, b, metric)``: set a closed-form starting point in place.
Start = Callable[[nn.Sequential, torch.Tensor, torch.Tensor, str], None]
#: ``refit(critic, a, b, metric) -> critic``: once kept, redo the cheap part on every
#: training point (``a``, ``b``).
Refit = Callable[[nn.Module, torch.Tensor, torch.Tensor, str], nn.Module]


@dataclass(frozen=True)
class PopulationFamily:
    """One critic family of the population bracket.

    Attributes:
        name: the name users give (``--critics``).
        fit: how the family is fitted on one fold (:data:`FitRoutine`).
        build: the family's network, for families with a fixed architecture
            (``None``: the fit routine makes it from the data).
        start: a closed-form starting point for a built network, or ``None``.
        projected: for lp other than l2, the network is plain layers trained with a
            projection after every step, started at signed permutations in l1
            (:func:`wassnet.critics.setup_projected_training`).
        refit: once the family is kept, what is redone on every training point.
        reads_subspace: the critic reads the data through a learned projection (its
            first layer); its unit rows are reported (:attr:`FittedCritic.directions`:
            where the laws were found to differ).
        help: one line for the documentation.
    """

    name: str
    fit: FitRoutine
    build: Builder | None = None
    start: Start | None = None
    projected: bool = False
    refit: Refit | None = None
    reads_subspace: bool = False
    help: str = ""

    def directions(self, module: nn.Module) -> np.ndarray | None:
        """What the fitted ``module`` reports: the unit rows of its projection for a
        family that :attr:`reads_subspace`, else ``None``."""
        return subspace_rows(module) if self.reads_subspace else None


def subspace_rows(module: nn.Module) -> np.ndarray:
    """The unit (l2) rows of ``module[0]``'s weight (float64; zero rows stay zero)."""
    with torch.no_grad():
        rows = module[0].weight.detach().cpu().double().numpy()
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


class FamilyRegistry:
    """Families by name, in the order they were registered (simplest first).

    ``registry[name]`` raises :class:`wassnet.errors.InputError` naming the known ones.
    """

    def __init__(self, what: str, families: Iterable[PopulationFamily] = ()) -> None:
        self.what = what
        self._families: dict[str, PopulationFamily] = {}
        for family in families:
            self.register(family)

    def register(self, family: PopulationFamily) -> PopulationFamily:
        """Add ``family``; a name registered twice is a programming error."""
        if family.name in self._families:
            raise ValueError(f"{self.what} {family.name!r} is already registered")
        self._families[family.name] = family
        return family

    def __getitem__(self, name: str) -> PopulationFamily:
        if name not in self._families:
            raise InputError(
                f"unknown {self.what} {name!r}: choose one of {', '.join(self._families)}"
            )
        return self._families[name]

    def __contains__(self, name: object) -> bool:
        return name in self._families

    def __iter__(self) -> Iterator[str]:
        return iter(self._families)

    def __len__(self) -> int:
        return len(self._families)

    def names(self) -> tuple[str, ...]:
        """The registered names, in order."""
        return tuple(self._families)
