r"""Exact W1 and certified bounds on point clouds (Euclidean ground cost).

For weighted clouds :math:`a = \sum_i a_i \delta_{x_i}` and
:math:`b = \sum_j b_j \delta_{y_j}`, with :math:`c_{ij} = \|x_i - y_j\|_2`:

.. math::
    W_1(a, b) = \min_{\pi \in \Pi(a, b)} \sum_{ij} \pi_{ij} c_{ij}
              = \max_{u_i - v_j \le c_{ij}} \sum_i a_i u_i - \sum_j b_j v_j .

* Any coupling :math:`\pi` gives an **upper bound**, its cost (:func:`assignment_cost`,
  :func:`sparse_transport_upper_bound`).
* Any potential :math:`u` on the points gives a **lower bound** after the
  c-transforms :math:`v_j = \max_i (u_i - c_{ij})`, :math:`u_i = \min_j (v_j + c_{ij})`,
  which make the pair feasible by construction (:func:`c_transform_bound`). For
  :math:`u = f(x)` with :math:`f` 1-Lipschitz the transforms never lower the bound.

Everything is computed in chunks (never the whole ``n x m`` matrix unless it fits a
small budget); certified values are float64, or float32 with a proven rounding margin.

Modules: :mod:`~wassnet.ot.exact` (POT's exact solver, the line by sorting),
:mod:`~wassnet.ot.costs` (float64 costs by chunks), :mod:`~wassnet.ot.tiles` (fused
float32 passes over all pairs, certified), :mod:`~wassnet.ot.dual` (c-transforms,
Sinkhorn), :mod:`~wassnet.ot.plans` (couplings, sparse LP),
:mod:`~wassnet.ot.assignment` (column generation for uniform clouds at scale).
"""

from __future__ import annotations

from wassnet.ot.assignment import AssignmentBracket, assignment_bracket
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
    sparse_transport_upper_bound,
)
from wassnet.ot.problem import Marginal, TransportProblem
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
    "sparse_transport_upper_bound",
    "w1_1d",
]
