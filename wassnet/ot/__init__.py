r"""Certified optimal transport on point clouds (l2, l1 or l-inf ground cost).

For weighted clouds :math:`a = \sum_i a_i \delta_{x_i}` and
:math:`b = \sum_j b_j \delta_{y_j}`, with :math:`c_{ij} = \|x_i - y_j\|` in the
problem's metric (``euclidean``, ``cityblock`` or ``chebyshev``,
:mod:`~wassnet.ot.metrics`):

.. math::
    W_1(a, b) = \min_{\pi \in \Pi(a, b)} \sum_{ij} \pi_{ij} c_{ij}
              = \max_{u_i - v_j \le c_{ij}} \sum_i a_i u_i - \sum_j b_j v_j .

* Any nonnegative plan gives an **upper bound**: its cost plus its marginal residuals
  charged at the distance to a hub (:func:`plan_bound`).
* Any potential gives a **lower bound** after the c-transforms
  :math:`v_j = \max_i (u_i - c_{ij})`, :math:`u_i = \min_j (v_j + c_{ij})`, rounded
  outward so the pair is feasible on every pair exactly (:func:`c_transform_bound`).

Both are statements about the problem exactly as given (:class:`TransportProblem`:
float64 points, exact marginals ``w / sum(w)``), computed with directed rounding or
proven margins (:mod:`wassnet.rounding`).

Modules: :mod:`~wassnet.ot.problem` (the exact problem), :mod:`~wassnet.ot.metrics`
(the ground costs, certified l1 and l-inf distances), :mod:`~wassnet.ot.costs`
(certified costs, float64 chunks), :mod:`~wassnet.ot.tiles` (fused float32 passes,
certified, Euclidean), :mod:`~wassnet.ot.dual` (c-transforms), :mod:`~wassnet.ot.plans` (plans and
their certificate), :mod:`~wassnet.ot.line` (the line, exact CDFs),
:mod:`~wassnet.ot.projections` (sliced lower bounds), :mod:`~wassnet.ot.sparse`
(column generation at scale), :mod:`~wassnet.ot.native` (the compiled sparse
assignment), :mod:`~wassnet.ot.simplex` (the compiled, warm-startable network simplex),
:mod:`~wassnet.ot.multiscale` (warm starts), :mod:`~wassnet.ot.exact` (POT's solver).
"""

from __future__ import annotations

from wassnet.ot.costs import PairwiseCost, direct_cost_bounds
from wassnet.ot.dual import (
    DualBound,
    Transform,
    c_transform,
    c_transform_bound,
    dual_value,
    sinkhorn_refine,
)
from wassnet.ot.exact import ExactSolverError, exact_w1, exact_w1_fits, w1_1d
from wassnet.ot.line import line_bracket
from wassnet.ot.plans import (
    PrimalBound,
    blockwise_refinement,
    monotone_coupling,
    plan_bound,
)
from wassnet.ot.problem import Marginal, TransportProblem
from wassnet.ot.sparse import AssignmentBracket, assignment_bracket, sparse_bracket
from wassnet.ot.tiles import TiledCost

__all__ = [
    "AssignmentBracket",
    "DualBound",
    "ExactSolverError",
    "Marginal",
    "PairwiseCost",
    "PrimalBound",
    "TiledCost",
    "Transform",
    "TransportProblem",
    "assignment_bracket",
    "blockwise_refinement",
    "c_transform",
    "c_transform_bound",
    "direct_cost_bounds",
    "dual_value",
    "exact_w1",
    "exact_w1_fits",
    "line_bracket",
    "monotone_coupling",
    "plan_bound",
    "sinkhorn_refine",
    "sparse_bracket",
    "w1_1d",
]
