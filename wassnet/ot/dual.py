r"""Dual potentials made feasible on every pair: certified lower bounds on W1.

Any potential :math:`u` on the first cloud becomes a feasible dual pair by the
c-transforms :math:`v_j = \max_i (u_i - c_{ij})`, :math:`u'_i = \min_j (v_j + c_{ij})`,
and then :math:`\sum_i a_i u'_i - \sum_j b_j v_j \le W_1(a, b)`. Certified here:

* the transforms run against certified **lower** bounds of the costs (float64 chunks,
  :class:`~wassnet.ot.costs.PairwiseCost`, or fused float32 passes,
  :class:`~wassnet.ot.tiles.TiledCost`), and are rounded outward: ``v`` is rounded
  **up** after the maximum, ``u'`` **down** after the minimum. Since ``up`` is
  nondecreasing, ``up(max_i fl(u_i - c_ij)) >= u_i - c_ij`` for every ``i``, so
  :math:`u'_i - v_j \le c_{ij}` holds exactly for every pair, for any input ``u``;
* the value is summed with the exact marginals (:meth:`Marginal.weighted_sum`) and
  rounded down (:func:`dual_value`).

Potentials are in the problem's scaled units; ``value`` is in the input's units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wassnet.errors import InputError
from wassnet.ot.costs import PairwiseCost
from wassnet.ot.metrics import ones_norm
from wassnet.ot.problem import TransportProblem
from wassnet.ot.sharded import ShardedCost
from wassnet.ot.tiles import TiledCost
from wassnet.rounding import down

__all__ = [
    "DualBound",
    "Transform",
    "c_transform",
    "c_transform_bound",
    "dual_value",
    "half_transform",
    "sinkhorn_refine",
]


@dataclass(frozen=True)
class DualBound:
    """A dual pair ``(u, v)`` with ``u_i - v_j <= c_ij`` on every pair (scaled units),
    and its value, a certified lower bound on W1 in the input's units."""

    value: float
    u: torch.Tensor
    v: torch.Tensor


Costs = PairwiseCost | TiledCost | ShardedCost


def _as_potential(
    cost: Costs, u: torch.Tensor | np.ndarray, size: int, sign: float = 1.0
) -> torch.Tensor:
    """A potential made small without changing its c-transform: for ``sign = 1`` (a
    potential ``u`` on the rows), shifted so that its maximum is 0 and clipped from
    below at minus a bound on the diameter (``v_j = max_i (u_i - c_ij)`` is unchanged:
    a common shift cancels in the value since both marginals sum to 1, and a row with
    ``u_i < max u - diameter`` never attains a maximum); for ``sign = -1`` (a potential
    ``v`` on the columns), the mirror image (``min_j (v_j + c_ij)`` is unchanged)."""
    u = torch.as_tensor(u).to(device=cost.device, dtype=torch.float64)
    if u.shape != (size,):
        raise InputError(f"potential must have shape ({size},), got {tuple(u.shape)}")
    if not bool(torch.isfinite(u).all()):
        raise InputError("potential contains NaN or inf")
    # scaled coordinates are below 1 in magnitude: every cost is below 2 |(1, ..., 1)|
    diameter = 2.0 * ones_norm(cost.problem.metric, cost.problem.dim) + 1.0
    u = sign * u
    top = u.max()
    shifted = torch.clamp_min(u - top, -diameter) if top - u.min() > diameter else u - top
    return sign * shifted


@dataclass(frozen=True)
class Transform:
    """The c-transforms of a potential: ``(u, v)`` feasible on every pair (problem
    units), and the pricing candidates the two passes found: for each row, ``k``
    columns of small ``c_ij + v_j``; for each column, ``k`` rows of large ``u_i - c_ij``."""

    u: torch.Tensor
    v: torch.Tensor
    row_candidates: torch.Tensor
    col_candidates: torch.Tensor


def c_transform(cost: Costs, u: torch.Tensor | np.ndarray, k: int = 0) -> Transform:
    """The c-transforms of any finite potential ``u``, feasible on every pair (exactly).

    Two passes over all pairs: float64 chunks (:class:`PairwiseCost`) or fused float32
    screens with exact float64 recomputation (:class:`TiledCost`); both round ``v``
    up and ``u'`` down (see the module notes)."""
    u = _as_potential(cost, u, cost.n)
    v, col_candidates = cost.col_pass(u, k)
    u_new, row_candidates = cost.row_pass(v, k)
    return Transform(u_new, v, row_candidates, col_candidates)


def half_transform(
    cost: Costs,
    v: torch.Tensor | np.ndarray,
    k: int = 0,
    below: torch.Tensor | np.ndarray | None = None,
) -> tuple[DualBound, torch.Tensor]:
    """One pass: ``u'_i = min_j (v_j + c_ij)`` (rounded down) makes ``(u', v)`` feasible
    on every pair, exactly, for any finite ``v``; returns that dual pair with its
    certified value, and ``[n, k]`` columns of smallest ``c_ij + v_j`` per row (the
    pairs of smallest reduced cost ``c_ij - u_i + v_j`` for any ``u``). With ``below``
    (a potential ``u`` on the rows), only rows where ``min_j (c_ij + v_j)`` may be below
    ``u_i`` -- rows with a negative reduced cost -- need candidates (the others' repeat
    their minimizer, on :class:`TiledCost`)."""
    v_in = torch.as_tensor(v).to(device=cost.device, dtype=torch.float64)
    v = _as_potential(cost, v_in, cost.m, sign=-1.0)
    if below is not None:
        shift = float(v_in.min())  # the passes see v - min(v)
        below = torch.as_tensor(below).to(device=cost.device, dtype=torch.float64) - shift
    u_new, candidates = cost.row_pass(v, k, below=below)
    return DualBound(dual_value(cost.problem, u_new, v), u_new, v), candidates


def dual_value(problem: TransportProblem, u: torch.Tensor, v: torch.Tensor) -> float:
    r"""A lower bound on :math:`\sum_i a_i u_i - \sum_j b_j v_j` (exact marginals), in the
    input's units. A lower bound on W1 only when ``(u, v)`` is feasible on every pair."""
    a_lo, _ = problem.a.weighted_sum(u.detach().cpu().numpy())
    _, b_hi = problem.b.weighted_sum(v.detach().cpu().numpy())
    value = float(down(a_lo - b_hi))
    if value >= 0:
        return problem.to_input_units(value, value)[0]
    return -problem.to_input_units(-value, -value)[1]  # rounded down, negative


def c_transform_bound(cost: Costs, u: torch.Tensor | np.ndarray) -> DualBound:
    """Certified lower bound on W1 from any potential ``u`` on the first cloud (problem
    units): its c-transforms (:func:`c_transform`) and their value (:func:`dual_value`).
    With :class:`TiledCost` the passes are float32 screens, tight to float64."""
    t = c_transform(cost, u)
    return DualBound(dual_value(cost.problem, t.u, t.v), t.u, t.v)


def sinkhorn_refine(
    cost: PairwiseCost,
    u: torch.Tensor,
    v: torch.Tensor,
    epsilons: list[float],
    iters_per_eps: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Improve potentials by log-domain Sinkhorn with decreasing ``epsilons`` (scaled units).

    Warm-started at ``(u, v)``; returns new potentials, which are *not* feasible by
    themselves: pass ``u`` to :func:`c_transform_bound` for a certified value.
    """
    u = u.clone().to(cost.device, torch.float64)
    log_a = torch.as_tensor(cost.problem.a.probabilities(), device=cost.device).log()
    log_b = torch.as_tensor(cost.problem.b.probabilities(), device=cost.device).log()
    for eps in epsilons:
        for _ in range(iters_per_eps):
            # v_j = eps log sum_i a_i exp((u_i - c_ij) / eps)   (a soft max_i (u_i - c_ij))
            acc = torch.full((cost.m,), -torch.inf, dtype=u.dtype, device=u.device)
            for start, c in cost.chunks():
                z = (u[start : start + len(c), None] - c) / eps + log_a[
                    start : start + len(c), None
                ]
                acc = torch.logaddexp(acc, torch.logsumexp(z, dim=0))
            v = eps * acc
            # u_i = -eps log sum_j b_j exp(-(v_j + c_ij) / eps)  (a soft min_j (v_j + c_ij))
            for start, c in cost.chunks():
                z = -(v[None, :] + c) / eps + log_b[None, :]
                u[start : start + len(c)] = -eps * torch.logsumexp(z, dim=1)
    return u, v
