"""Options of the W1 estimator, grouped by the question they serve.

:class:`SampleOptions` configures the certified bracket on W1 between the two given
samples; :class:`PopulationOptions` the confidence bracket on W1 between the
distributions they come from. Each field says when it applies. The defaults are the measured fastest
choices on this project's benchmark suite (BENCHMARKS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from wassnet.errors import InputError

__all__ = [
    "CRITICS",
    "DEFAULT_CRITICS",
    "ROUTES",
    "PopulationOptions",
    "Route",
    "SampleOptions",
    "Target",
]

Target = Literal["sample", "population", "both"]
Route = Literal["auto", "line", "dense", "assignment", "transport", "blockwise"]

#: The sample routes, in the order :func:`wassnet.w1.sample.choose_route` considers them.
ROUTES: tuple[str, ...] = ("line", "dense", "assignment", "transport", "blockwise")


@dataclass(frozen=True)
class SampleOptions:
    """How the certified bracket on W1 between the two samples is computed.

    Attributes:
        route: ``"auto"`` (chosen from the problem's size and weights, see
            :func:`wassnet.w1.sample.choose_route`) or one route by name:
            ``"line"`` (d = 1, exact CDFs), ``"dense"`` (POT's network simplex on the
            full cost matrix, then its plan and potentials certified), ``"assignment"``
            (uniform clouds with n == m: sparse assignments by column generation with
            certified passes over all pairs), ``"transport"`` (any weights: sparse
            transport plans by column generation), ``"blockwise"`` (no pass over all pairs: a
            monotone coupling solved exactly in blocks, and sliced lower bounds).
        time_budget: seconds for the whole call, counted from its start (the CLI
            starts the clock before loading the files; see ``deadline`` of
            :func:`wassnet.estimate_w1`). The quick certified bracket
            (:mod:`wassnet.ot.quick`: a few linear passes over the points) comes
            first; then warm-start levels, refinement blocks and rounds stop between
            pieces when the time is spent, and work that cannot be interrupted (a
            solver, two passes over all pairs) starts only when its predicted cost
            fits in the time left. The best certified bracket found is returned, with
            ``budget`` saying what the budget allowed. Guarantee: the call returns
            within ``time_budget`` plus a slack, the slack being the work never
            skipped (validating the inputs, building the problem, the quick bracket:
            each ``O((n + m) d)``) and the overrun of the one stage in progress when a
            prediction was wrong; the bracket is certified whatever the budget.
            ``None``: no limit (and the result is as without this option).
        tol: stop refining once ``upper - lower <= tol * upper``.
        rounds: at most this many rounds of column generation.
        candidates: candidate pairs per point and round (column generation);
            ``None``: 16 in dimension <= 4 (where many pairs are nearly tight), else 8.
        dense_max_pairs: the dense route is used up to this many pairs ``n * m`` (four
            times as many for weighted clouds in dimension <= 3, where POT's dense
            solver was measured faster than sparse transport plans).
        pass_max_pairs: beyond this many pairs, no pass over all pairs is made
            (route ``"blockwise"``).
        warm_start: points per side of the subsample whose exact potentials start the
            column generation (:func:`wassnet.ot.multiscale.warm_start`).
        backend: the passes over all pairs: ``"native"`` (the C pass, CPU),
            ``"compiled"`` (``torch.compile``-fused float32 tiles), ``"eager"``, or
            ``"auto"`` (native where it compiles, see :class:`wassnet.ot.TiledCost`).
    """

    route: Route = "auto"
    time_budget: float | None = None
    tol: float = 1e-9
    rounds: int = 30
    candidates: int | None = None
    dense_max_pairs: int = 6_250_000
    pass_max_pairs: float = 2e12
    warm_start: int = 2000
    backend: Literal["auto", "native", "compiled", "eager"] = "auto"

    def candidates_for(self, dim: int) -> int:
        """Candidate pairs per point and round for points in dimension ``dim``."""
        if self.candidates is not None:
            return int(self.candidates)
        return 16 if dim <= 4 else 8

    def __post_init__(self) -> None:
        if self.route != "auto" and self.route not in ROUTES:
            raise InputError(
                f"route must be auto or one of {', '.join(ROUTES)}, got {self.route!r}"
            )
        if self.time_budget is not None and not (
            math.isfinite(self.time_budget) and self.time_budget > 0
        ):
            raise InputError(
                f"time_budget must be a positive number of seconds, got {self.time_budget}"
            )
        if not (math.isfinite(self.tol) and self.tol >= 0):
            raise InputError(f"tol must be a finite number >= 0, got {self.tol}")
        for name in ("rounds", "candidates", "warm_start"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.backend not in ("auto", "native", "compiled", "eager"):
            raise InputError(
                f"backend must be auto, native, compiled or eager, got {self.backend!r}"
            )


#: The critic families tried for the population bracket, simplest first.
CRITICS: tuple[str, ...] = (
    "linear",
    "radial",
    "projection",
    "transport",
    "subspace",
    "dense",
    "conv",
)
#: The families tried when ``critics`` is not given (``conv`` needs an image shape).
DEFAULT_CRITICS: tuple[str, ...] = (
    "linear",
    "radial",
    "projection",
    "transport",
    "subspace",
    "dense",
)


@dataclass(frozen=True)
class PopulationOptions:
    """How the confidence bracket on W1 between the two distributions is computed.

    Attributes:
        confidence: the bracket holds with at least this probability over the draw of
            the samples (split evenly between its two ends).
        folds: cross-fitting folds: each fold is scored by critics fitted on the
            others, so every point is used for evaluation exactly once.
        critics: critic families fitted on each fold's training points; the one with
            the largest dual on a validation split of those points is kept:
            ``"linear"`` (a unit vector), ``"radial"`` (distance to a learned
            center), ``"projection"`` (the 1-D Kantorovich potential along a
            direction found on the training points), ``"transport"`` (the training
            points' optimal dual pair, extended by c-transforms), ``"subspace"`` (a
            small network on a learned 2- or 3-dimensional orthonormal projection),
            ``"dense"`` (Björck + GroupSort network,
            widths ``hidden``), ``"conv"`` (BCOP convolutions, then Björck layers,
            on points reshaped to ``image_shape``); see :mod:`wassnet.w1.critic_fit`.
        image_shape: ``(C, H, W)`` of flattened images, for the ``conv`` family.
        hidden: widths of the dense critic.
        iters: Björck iterations of the dense critic's layers (the certified bound
            is computed from the weights reached, so fewer iterations cost accuracy
            of the constraint, never validity).
        activation: the dense critic's activation (``maxmin``, ``fullsort``,
            ``groupsort`` with groups of 4, ``relu``).
        steps: at most this many optimizer steps per critic (early stopping ends
            most fits sooner).
        batch_size: points per side and step.
        lr: Adam's learning rate.
        eval_every, patience: the validation dual is computed every ``eval_every``
            steps; a fit stops after ``patience`` evaluations without a gain above a
            quarter of the validation dual's standard error, and keeps its best state.
        validation: fraction of each fold's training points held out for early
            stopping and for choosing the critic.
        time_budget: seconds for all critic fits together (each fold gets an equal
            share; a fit that runs out keeps its best state so far). ``None``: no limit.
    """

    confidence: float = 0.95
    folds: int = 2
    critics: tuple[str, ...] = DEFAULT_CRITICS
    image_shape: tuple[int, int, int] | None = None
    hidden: tuple[int, ...] = (64, 64)
    iters: int = 10
    activation: str = "maxmin"
    steps: int = 1000
    batch_size: int = 256
    lr: float = 0.005
    eval_every: int = 50
    patience: int = 3
    validation: float = 0.25
    time_budget: float | None = 60.0

    def __post_init__(self) -> None:
        if not (0.5 <= self.confidence < 1):
            raise InputError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if int(self.folds) != self.folds or self.folds < 2:
            raise InputError(f"folds must be an integer >= 2, got {self.folds}")
        critics = tuple(self.critics)
        object.__setattr__(self, "critics", critics)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        if not critics or any(c not in CRITICS for c in critics):
            raise InputError(f"critics must be among {', '.join(CRITICS)}, got {critics!r}")
        if "conv" in critics and (
            self.image_shape is None
            or len(self.image_shape) != 3
            or any(int(s) < 1 for s in self.image_shape)
        ):
            raise InputError(
                f"the conv critic needs image_shape (C, H, W), got {self.image_shape!r}"
            )
        if self.activation not in ("maxmin", "fullsort", "groupsort", "relu"):
            raise InputError(
                f"activation must be maxmin, fullsort, groupsort or relu, got {self.activation!r}"
            )
        for name in ("steps", "batch_size", "eval_every", "patience", "iters"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a positive number, got {self.lr}")
        if not (0 < self.validation < 1):
            raise InputError(f"validation must be in (0, 1), got {self.validation}")
        if self.time_budget is not None and not (
            math.isfinite(self.time_budget) and self.time_budget > 0
        ):
            raise InputError(
                f"time_budget must be a positive number of seconds, got {self.time_budget}"
            )
