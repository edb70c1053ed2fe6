"""Results of the W1 estimator: one object per question, never confused.

* :class:`SampleBracket`: W1 between **the two given samples** (a finite LP), with a
  certified bracket ``lower <= W1 <= upper`` (exact arithmetic, the input as given).
* :class:`PopulationBracket`: W1 between **the distributions** the samples come from,
  a confidence bracket (a statistical statement; computed by
  :mod:`wassnet.w1.population`), with one :class:`FoldScore` per cross-fitting fold.
* :class:`W1Result`: what :func:`wassnet.estimate_w1` returns: the ``sample`` part,
  the ``population`` part, the sampling ``floor`` (W1 between two halves of A), and
  the problem's description.
  ``to_dict()`` is JSON-ready (strict JSON: no NaN), ``summary()`` readable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from wassnet.critics.families import FittedCritic

__all__ = ["FoldScore", "PopulationBracket", "SampleBracket", "W1Result"]


def _relative_width(lower: float, upper: float) -> float:
    """``(upper - lower) / upper``; ``0`` for a closed bracket at zero (``upper == 0``)."""
    if upper <= 0:
        return 0.0
    return max(0.0, (upper - lower) / upper)


@dataclass
class SampleBracket:
    """Certified W1 between the two given samples (input units).

    Attributes:
        lower, upper: ``lower <= W1 <= upper`` holds exactly for the input as given
            (float64 points, marginals ``w / sum(w)`` as exact rationals).
        route: how the bracket was computed (``line``, ``dense``, ``assignment``,
            ``transport``, ``blockwise``; see :class:`wassnet.w1.SampleOptions`; or
            ``quick`` when a time budget allowed only the quick certificates of
            :mod:`wassnet.ot.quick`).
        lower_method, upper_method: the certified object behind each side (a dual pair
            feasible on every pair, a transport plan, exact CDFs).
        seconds: wall-clock time of the bracket.
        passes: passes over all ``n * m`` pairs made (float64 or fused float32).
        rounds: per round of refinement, ``{"round", "lower", "upper", "seconds"}``.
        exact: POT's exact W1 (``ot.emd2``) when it was asked for, else ``None``: a
            reference computed in float64, not certified.
        plan: the transport plan behind ``upper`` as sparse triplets ``(rows, cols,
            mass)`` (``None`` on the line): ``mass[k]`` moves from ``A[rows[k]]`` to
            ``B[cols[k]]``.
        potentials: the dual pair ``(u, v)`` behind ``lower`` (``None`` on the line,
            when they would overflow float64, or when ``lower`` is the quick bracket's
            linear critic), with ``u[i] - v[j] <= |A[i] - B[j]|``
            for every pair, exactly; ``lower`` is the certified value of this pair
            (before the power-of-two rescale to input units, which is exact unless
            the potentials are subnormal).
        budget: with a time budget, one sentence saying what it allowed (what was
            skipped or stopped, and so where the bracket comes from); else ``None``.
    """

    lower: float
    upper: float
    route: str
    lower_method: str
    upper_method: str
    seconds: float
    passes: int = 0
    rounds: list[dict[str, float]] = field(default_factory=list)
    exact: float | None = None
    plan: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    potentials: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    budget: str | None = None

    @property
    def estimate(self) -> float:
        """The bracket's midpoint: ``|estimate - W1| <= (upper - lower) / 2``."""
        return 0.5 * (self.lower + self.upper)

    @property
    def relative_width(self) -> float:
        """``(upper - lower) / upper`` (``0`` when ``upper == 0``: W1 is exactly 0)."""
        return _relative_width(self.lower, self.upper)

    def to_dict(self) -> dict:
        """JSON-ready; the plan and the potentials are left out (use the attributes)."""
        return {
            "lower": self.lower,
            "upper": self.upper,
            "estimate": self.estimate,
            "relative_width": self.relative_width,
            "route": self.route,
            "lower_method": self.lower_method,
            "upper_method": self.upper_method,
            "seconds": self.seconds,
            "passes": self.passes,
            "rounds": [dict(r) for r in self.rounds],
            "exact": self.exact,
            "budget": self.budget,
        }

    def summary_lines(self, label: str = "sample W1") -> list[str]:
        lines = [
            f"{label:<16} in [{self.lower:.6g}, {self.upper:.6g}]   "
            f"(width {self.upper - self.lower:.2g}, relative {self.relative_width:.1e}; certified)",
            f"{'':16} lower: {self.lower_method}",
            f"{'':16} upper: {self.upper_method}",
            f"{'':16} route {self.route}, {self.seconds:.2f} s, "
            f"{self.passes} passes over all pairs",
        ]
        if self.budget is not None:
            lines.append(f"{'':16} {self.budget}")
        if self.exact is not None:
            lines.append(
                f"{'exact (POT)':<16} {self.exact:.6g}   (reference, float64; not certified)"
            )
        return lines


@dataclass
class FoldScore:
    """One cross-fitting fold: the critic fitted without it, scored on it.

    Attributes:
        fold: the fold's index.
        n_a, n_b: points of A and B in the fold.
        critic: the family kept for this fold (fitted on the other folds).
        lipschitz: the critic's certified Lipschitz bound ``L`` (values are divided by it).
        dual: ``mean f(A_k) / L - mean f(B_k) / L``, the held-out dual.
        stderr: its estimated standard error.
        lower: ``dual - t * stderr`` (the fold's one-sided bound).
        validation: validation dual of every family tried (the basis of the choice).
        directions: for ``projection`` and ``subspace`` critics, the unit (l2) rows of
            the projection the critic reads (where it found the laws to differ);
            else ``None``.
    """

    fold: int
    n_a: int
    n_b: int
    critic: str
    lipschitz: float
    dual: float
    stderr: float
    lower: float
    validation: dict[str, float]
    directions: list[list[float]] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PopulationBracket:
    """W1 between the distributions the samples come from: a confidence bracket.

    Attributes:
        lower, upper: ``lower <= W1(P, Q) <= upper`` with probability at least
            ``confidence`` over the draw of the samples, under the assumptions in
            :mod:`wassnet.w1.population` (i.i.d. draws, finite second moments, the t
            approximation of each fold's mean). Not certified: a statistical statement.
        estimate: the cross-fitted critics' held-out dual (clipped at 0); errs low
            when the critics are not optimal.
        confidence: the bracket's level.
        lower_method, upper_method: how each end was obtained.
        folds: per fold, the critic kept and its held-out score.
        sample_upper: the certified upper end of the sample bracket the upper end uses.
        deviation: the Efron--Stein/Cantelli margin added to it.
        seconds: time of the critic fits and scores (the sample bracket not included).
        heldout: the critic value ``f(x) / L`` at every point of A and of B, each from
            the critic fitted without that point's fold (for histograms).
        critics: the fitted critics, one per fold (float64 modules; ``module(x) /
            lipschitz`` is 1-Lipschitz).
        critics_kept: the families kept, sorted (one per fold, repeats removed).
        directions: when folds kept ``projection`` or ``subspace`` critics, where the
            laws were found to differ: unit (l2) rows spanning the subspace the folds'
            projections agree on most (the leading eigenvectors of the mean of their
            projectors; one row for projections, oriented as fold 0's); else ``None``.
        agreement: with ``directions``, the mean over those folds of the fraction of
            each fold's subspace inside it (1: every fold found the same one).
    """

    lower: float
    upper: float
    estimate: float
    confidence: float
    lower_method: str
    upper_method: str
    folds: list[FoldScore]
    sample_upper: float
    deviation: float
    seconds: float
    heldout: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    critics: list[FittedCritic] = field(default_factory=list, repr=False)
    critics_kept: list[str] = field(default_factory=list)
    directions: list[list[float]] | None = None
    agreement: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready; the held-out values and the critics are left out."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        del out["heldout"], out["critics"]
        out["folds"] = [fold.to_dict() for fold in self.folds]
        return out

    def summary_lines(self) -> list[str]:
        critics = ", ".join(sorted({f.critic for f in self.folds}))
        lines = [
            f"{'population W1':<16} in [{self.lower:.6g}, {self.upper:.6g}]   "
            f"estimate {self.estimate:.6g}   ({self.confidence:.0%} confidence; not certified)",
            f"{'':16} lower: {self.lower_method}",
            f"{'':16} upper: {self.upper_method}",
            f"{'':16} critics kept: {critics}; {self.seconds:.2f} s",
        ]
        where = self.where_sentence()
        if where:
            lines.append(f"{'':16} {where}")
        return lines

    def where_sentence(self) -> str | None:
        """Where the laws were found to differ (projection / subspace critics), or ``None``."""
        if self.directions is None:
            return None
        rows = np.asarray(self.directions)
        agree = f"folds agree {self.agreement:.2f}"
        if len(rows) == 1:
            u = rows[0]
            top = np.argsort(-np.abs(u))[:4]
            parts = ", ".join(f"x{i} {u[i]:+.2f}" for i in top)
            more = ", ..." if len(u) > 4 else ""
            return (
                f"where they differ: along the direction u = ({parts}{more}) ({agree}; "
                "all of it in --json population.directions)"
            )
        return (
            f"where they differ: within a {len(rows)}-dimensional subspace ({agree}; its "
            "orthonormal basis in --json population.directions)"
        )


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


@dataclass
class W1Result:
    """The result of :func:`wassnet.estimate_w1`.

    Attributes:
        sample: W1 between the two given samples, certified (always computed: the
            population bracket's upper end is built on it).
        floor: W1 between two disjoint random halves of A: two finite samples of one
            distribution are not at distance 0, and this is the scale against which
            ``sample`` should be read. ``None`` when not computed.
        population: W1 between the distributions (``target`` ``population`` or
            ``both``), a confidence bracket; ``None`` when not asked for or refused
            (see ``notes``).
        notes: plain sentences about what was not computed, and why.
        n_a, n_b, dim: sizes and dimension (``dim == 1``: points on the line).
        target: the question(s) answered.
        metric: the ground cost (``euclidean``, ``cityblock`` or ``chebyshev``).
        seed, device: reproducibility and where the passes ran.
        timings: seconds per stage.
    """

    sample: SampleBracket | None
    n_a: int
    n_b: int
    dim: int
    target: str
    metric: str = "euclidean"
    floor: SampleBracket | None = None
    population: PopulationBracket | None = None
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    device: str = "cpu"
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "metric": self.metric,
            "n_a": self.n_a,
            "n_b": self.n_b,
            "dim": self.dim,
            "sample": None if self.sample is None else self.sample.to_dict(),
            "floor": None if self.floor is None else self.floor.to_dict(),
            "population": None if self.population is None else self.population.to_dict(),
            "notes": list(self.notes),
            "seed": self.seed,
            "device": self.device,
            "timings": {k: _finite_or_none(v) for k, v in self.timings.items()},
        }

    def sampling_noise_sentence(self) -> str | None:
        """A plain sentence when the sample value is mostly sampling noise, else ``None``.

        Said when two random halves of A are at least half the sample value apart:
        then a sample W1 of that size is what sampling alone produces, and it says
        little about W1 between the distributions.
        """
        if self.floor is None or self.sample is None or self.sample.upper <= 0:
            return None
        if self.floor.lower < 0.5 * self.sample.upper:
            return None
        return (
            f"two halves of A alone are {self.floor.estimate:.3g} apart: most of the sample "
            "W1 is sampling noise, not a difference between the distributions"
        )

    def summary(self) -> str:
        lines = [f"W1 between A (n={self.n_a}) and B (n={self.n_b}), d={self.dim}, {self.metric}"]
        if self.sample is not None:
            lines += self.sample.summary_lines("sample W1")
        if self.floor is not None:
            lines += self.floor.summary_lines("sampling floor")[:1]
            lines.append(f"{'':16} (W1 between two random halves of A)")
            noise = self.sampling_noise_sentence()
            if noise:
                lines.append(f"{'':16} {noise}")
        if self.population is not None:
            lines += self.population.summary_lines()
        lines += [f"{'note':<16} {note}" for note in self.notes]
        timing = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
        lines.append(f"{'time':<16} {timing}; seed {self.seed}, device {self.device}")
        return "\n".join(lines)
