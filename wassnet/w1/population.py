r"""A confidence bracket on W1 between the distributions two samples come from.

``A`` holds ``n`` i.i.d. draws of a law ``P``, ``B`` holds ``m`` i.i.d. draws of ``Q``
(independent of ``A``). :func:`population_bracket` returns ``lower <= W1(P, Q) <= upper``
holding with probability at least ``confidence`` over the draw of the samples, under
the assumptions stated for each end. Half of ``1 - confidence`` goes to each end.

**Lower end: cross-fitted critics.** The points of each cloud are split into ``K``
folds. For fold ``k``, a critic ``f_k`` is fitted on the other folds only
(:func:`wassnet.w1.critic_fit.fit_critic`) and its Lipschitz constant ``L_k`` is
certified, so ``g_k = f_k / L_k`` is 1-Lipschitz and, by Kantorovich--Rubinstein,
``mu_k = E_P g_k - E_Q g_k <= W1(P, Q)``. Given the other folds, ``g_k`` is fixed and
fold ``k``'s points are fresh i.i.d. draws, so the fold's dual
``D_k = mean_{A_k} g_k - mean_{B_k} g_k`` is an unbiased estimate of ``mu_k``, with a
standard error ``s_k`` estimated from the fold's values. Each fold gets a one-sided
Student-t bound at level ``alpha / (2K)``: ``D_k - t s_k <= mu_k``; by the union bound all
``K`` hold together with probability ``>= 1 - alpha / 2``, and then
``lower = max(0, mean_k (D_k - t s_k)) <= mean_k mu_k <= W1(P, Q)``. Assumption: the
critic values have finite variance and a fold is large enough for the t
approximation of its mean (the only approximation on this side). The held-out values
are computed in float64; their rounding (about 1e-15 relative) is not charged, being
negligible next to the statistical margin.

**Upper end: the sample value, and how far it can fall below its mean.** For the
empirical measures ``P_n, Q_m``, ``E W1(P_n, Q_m) >= W1(P, Q)`` (joint convexity of
W1, Jensen). Moving one point of ``A`` changes ``W1(P_n, Q_m)`` by at most ``1/n`` of the
distance moved, so the Efron--Stein inequality gives
``Var W1(P_n, Q_m) <= E d(X, X')^2 / (2n) + E d(Y, Y')^2 / (2m) =: V`` (``X, X'``
independent draws of ``P``; for the Euclidean metric ``E d(X, X')^2 = 2 tr Cov(P)``),
and Cantelli's inequality
``P(W1(P_n, Q_m) <= E W1(P_n, Q_m) - t) <= V / (V + t^2)``. With
``t = sqrt(V (1 - a) / a)``, ``a = alpha / 2``: ``upper = sample.upper + t``, where
``sample.upper`` is the certified upper end of the sample bracket. Assumptions: finite
second moments (no bounded support needed); ``tr Cov`` is replaced by its unbiased
sample estimate (Euclidean), or by the mean of ``d(x_i, x_j)^2`` over the pairs of
at most ``MOMENT_POINTS`` random points (other metrics; a U-statistic, unbiased).

**Estimate:** the cross-fitted dual ``mean_k D_k`` (clipped at 0): unbiased for
``mean_k mu_k``, so it errs low exactly when the critics fall short of optimal. Sample
W1 overstates W1(P, Q) -- in high dimension by far -- and is not an estimate of it.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from wassnet.critics import FittedCritic, critic_values
from wassnet.errors import InputError
from wassnet.norms import by_metric
from wassnet.ot.metrics import metric_cdist
from wassnet.ot.sharded import all_gather_objects, job_rank
from wassnet.w1.critic_fit import fit_critic
from wassnet.w1.options import PopulationOptions
from wassnet.w1.result import FoldScore, PopulationBracket

__all__ = [
    "MIN_POINTS_PER_FOLD",
    "MOMENT_POINTS",
    "FoldScore",
    "PopulationBracket",
    "common_directions",
    "pair_second_moment",
    "population_bracket",
    "size_problem",
]

#: Each sample needs at least this many points per fold.
MIN_POINTS_PER_FOLD = 4
#: The second moment ``E d(X, X')^2`` of the metrics other than the Euclidean one is
#: estimated on the pairs of at most this many random points.
MOMENT_POINTS = 2000


def _fold_ids(n: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """A balanced random fold index per point (sizes differ by at most one)."""
    ids = np.arange(n) % folds
    rng.shuffle(ids)
    return ids


def _score(values_a: np.ndarray, values_b: np.ndarray, level: float) -> tuple[float, float, float]:
    """(dual, stderr, one-sided lower bound at ``level``) of one fold's held-out values."""
    dual = float(values_a.mean() - values_b.mean())
    var_a = values_a.var(ddof=1) if len(values_a) > 1 else np.inf
    var_b = values_b.var(ddof=1) if len(values_b) > 1 else np.inf
    stderr = float(np.sqrt(var_a / len(values_a) + var_b / len(values_b)))
    dof = max(1, min(len(values_a), len(values_b)) - 1)
    quantile = float(stats.t.ppf(1.0 - level, dof))
    return dual, stderr, dual - quantile * stderr


def pair_second_moment(x: np.ndarray, metric: str, seed: int = 0) -> float:
    """An unbiased estimate of ``E d(X, X')^2`` for two independent draws of the law of
    ``x``'s rows: ``2 tr Cov`` (Euclidean), else the mean over pairs of at most
    :data:`MOMENT_POINTS` random rows."""
    if len(x) < 2:
        return 0.0
    if by_metric(metric).is_euclidean:
        return 2.0 * float(x.var(axis=0, ddof=1).sum())
    if len(x) > MOMENT_POINTS:
        x = x[np.random.default_rng([seed, 17]).choice(len(x), MOMENT_POINTS, replace=False)]
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    d2 = metric_cdist(t, t, metric).square_()
    k = len(x)
    return float(d2.sum()) / (k * (k - 1))  # the diagonal is zero


def _cantelli_deviation(xa: np.ndarray, xb: np.ndarray, alpha: float, metric: str) -> float:
    """``sqrt(V (1 - alpha) / alpha)`` with ``V = E d(X, X')^2 / 2n + E d(Y, Y')^2 / 2m``
    (estimated)."""
    variance = pair_second_moment(xa, metric) / (2 * len(xa))
    variance += pair_second_moment(xb, metric) / (2 * len(xb))
    return float(np.sqrt(variance * (1.0 - alpha) / alpha))


def size_problem(n_a: int, n_b: int, folds: int) -> str | None:
    """Why ``n_a`` and ``n_b`` points are too few for ``folds`` folds (``None``: enough)."""
    need = MIN_POINTS_PER_FOLD * folds
    if min(n_a, n_b) >= need:
        return None
    return (
        f"the population bracket needs at least {need} points per sample "
        f"({folds} folds), got {n_a} and {n_b}"
    )


def _fold_score(
    fold: int, fitted: FittedCritic, xa: np.ndarray, xb: np.ndarray, level: float
) -> tuple[FoldScore, np.ndarray, np.ndarray]:
    """Score a fold's held-out points by ``f / L``; returns the score and the values."""
    values_a = critic_values(fitted.module, torch.from_numpy(xa)).numpy() / fitted.lipschitz
    values_b = critic_values(fitted.module, torch.from_numpy(xb)).numpy() / fitted.lipschitz
    dual, stderr, low = _score(values_a, values_b, level)
    rows = None if fitted.directions is None else fitted.directions.tolist()
    score = FoldScore(
        fold,
        len(xa),
        len(xb),
        fitted.name,
        fitted.lipschitz,
        dual,
        stderr,
        low,
        fitted.validation,
        rows,
    )
    return score, values_a, values_b


def common_directions(
    critics: list[FittedCritic],
) -> tuple[list[list[float]] | None, float | None]:
    """The subspace the folds' projections agree on most, and how much they agree.

    With ``U_f`` the orthonormal rows of fold ``f``'s projection (``projection`` and
    ``subspace`` critics only), the rows returned are the ``k`` leading eigenvectors
    of ``mean_f U_f^T U_f`` (``k`` the most rows of a fold); the agreement is
    ``mean_f |U_f V^T|_F^2 / k_f``, in ``[0, 1]``. One row is oriented as fold 0's."""
    found = [c.directions for c in critics if c.directions is not None]
    if not found:
        return None, None
    bases = [np.linalg.qr(u.T)[0].T for u in found]  # orthonormal rows
    k = max(len(u) for u in bases)
    projector = sum(u.T @ u for u in bases) / len(bases)
    _, vecs = np.linalg.eigh(projector)
    v = vecs[:, ::-1][:, :k].T
    if k == 1 and float(v[0] @ found[0][0]) < 0:
        v = -v
    agreement = float(np.mean([np.sum((u @ v.T) ** 2) / len(u) for u in bases]))
    return v.tolist(), min(1.0, agreement)


def _cross_fit(
    xa: np.ndarray,
    xb: np.ndarray,
    options: PopulationOptions,
    device: torch.device | str,
    seed: int,
    level: float,
    progress: bool,
    metric: str,
) -> tuple[list[FoldScore], list[FittedCritic], tuple[np.ndarray, np.ndarray]]:
    """Fit on all folds but one, score the one left out, for every fold. In a
    distributed job fold ``i`` is fitted on rank ``i mod world_size`` and the folds
    are gathered on every rank; each fold's seed is drawn per fold, in fold order, so
    the result does not depend on the number of ranks."""
    k, start = options.folds, time.perf_counter()
    rng = np.random.default_rng([seed, 13])
    ids_a, ids_b = _fold_ids(len(xa), k, rng), _fold_ids(len(xb), k, rng)
    seeds = [int(rng.integers(2**62)) for _ in range(k)]
    here, world = job_rank()
    mine = list(range(here, k, world))
    ta = torch.as_tensor(xa, dtype=torch.float32, device=device)
    tb = torch.as_tensor(xb, dtype=torch.float32, device=device)
    budget = options.time_budget
    done: list[tuple[FoldScore, FittedCritic, np.ndarray, np.ndarray]] = []
    bar = tqdm(total=len(mine), desc="population critics", unit="fold",
               disable=not progress or here != 0, leave=False)  # fmt: skip
    for j, fold in enumerate(mine):
        deadline = np.inf if budget is None else start + budget * (j + 1) / len(mine)
        train_a = torch.from_numpy(np.flatnonzero(ids_a != fold)).to(device)
        train_b = torch.from_numpy(np.flatnonzero(ids_b != fold)).to(device)
        fitted = fit_critic(
            ta[train_a], tb[train_b], options, deadline=deadline, seed=seeds[fold], metric=metric
        )
        held_a, held_b = ids_a == fold, ids_b == fold
        score, values_a, values_b = _fold_score(fold, fitted, xa[held_a], xb[held_b], level)
        done.append((score, fitted, values_a, values_b))
        bar.update(1)
        bar.set_postfix(critic=fitted.name, dual=f"{score.dual:.4g}")
    bar.close()
    found = sorted((f for part in all_gather_objects(done) for f in part), key=lambda f: f[0].fold)
    heldout_a, heldout_b = np.empty(len(xa)), np.empty(len(xb))
    for score, _, values_a, values_b in found:
        heldout_a[ids_a == score.fold], heldout_b[ids_b == score.fold] = values_a, values_b
    return [f[0] for f in found], [f[1] for f in found], (heldout_a, heldout_b)


def population_bracket(
    xa: np.ndarray,
    xb: np.ndarray,
    sample_upper: float,
    options: PopulationOptions | None = None,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = False,
    metric: str = "euclidean",
) -> PopulationBracket:
    """Confidence bracket on W1(P, Q) from i.i.d. samples ``xa ~ P``, ``xb ~ Q``.

    Args:
        xa, xb: ``[n, d]`` and ``[m, d]`` float64 points (validated, unweighted).
        sample_upper: a certified upper bound on W1 between the two samples.
        options: :class:`PopulationOptions`.
        device: where the critics are fitted.
        seed: the folds, the validation splits and the critics' initialization.
        progress: show a progress bar over the fits.
        metric: the ground cost (the critics are certified 1-Lipschitz in its norm;
            ``sample_upper`` must be for the same metric).

    Returns:
        A :class:`PopulationBracket` (see the module docstring for the argument).
    """
    options = PopulationOptions() if options is None else options
    k = options.folds
    problem = size_problem(len(xa), len(xb), k)
    if problem:
        raise InputError(problem)
    start = time.perf_counter()
    alpha = (1.0 - options.confidence) / 2.0
    folds, critics, heldout = _cross_fit(xa, xb, options, device, seed, alpha / k, progress, metric)
    deviation = _cantelli_deviation(xa, xb, alpha, metric)
    estimate = max(0.0, float(np.mean([f.dual for f in folds])))
    directions, agreement = common_directions(critics)
    lower = max(0.0, float(np.mean([f.lower for f in folds])))
    return PopulationBracket(
        lower=lower,
        upper=float(sample_upper + deviation),
        estimate=estimate,
        confidence=options.confidence,
        lower_method=(
            f"held-out dual of {k} cross-fitted critics certified 1-Lipschitz in "
            f"{by_metric(metric).name}, "
            f"one-sided t bound per fold (union bound)"
        ),
        upper_method="certified sample W1 + Efron-Stein/Cantelli margin (finite 2nd moments)",
        folds=folds,
        sample_upper=float(sample_upper),
        deviation=deviation,
        seconds=time.perf_counter() - start,
        heldout=heldout,
        critics=critics,
        critics_kept=sorted({f.critic for f in folds}),
        directions=directions,
        agreement=agreement,
    )
