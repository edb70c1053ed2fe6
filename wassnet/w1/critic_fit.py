"""Fitting 1-Lipschitz critics that generalize: the capacity ladder of the population bracket.

For one fold's training points, :func:`fit_critic` fits each critic family of
:class:`~wassnet.w1.options.PopulationOptions` on part of them and keeps the one whose
dual ``mean f(A) - mean f(B)`` is largest on the rest (the validation split):

* ``linear``: ``f(x) = <w, x>`` with ``|w| = 1``, the normalized difference of the
  means (the exact maximizer of the training dual among linear critics; optimal for
  translations); when kept, it is refit on all the training points (closed form);
* ``radial``: ``f(x) = +-|x - c|`` with a learned center ``c`` (optimal for radial
  rescalings and concentric spheres);
* ``transport``: the optimal dual pair ``(u, v)`` of the training points (the sample
  engine, on at most ``TRANSPORT_MAX_POINTS`` per side) extended to all of ``R^d`` by
  c-transforms, ``f(x) = (min_j (|x - b_j| + v_j) + max_i (u_i - |x - a_i|)) / 2``: a
  mean of two 1-Lipschitz functions, nothing trained (strong in low dimension, where
  the sample potential converges; noise in high dimension, which validation sees);
* ``dense``: Björck-orthonormal layers with GroupSort activations (Anil et al. 2019),
  trained with Adam and early stopping on the validation dual;
* ``conv``: for flattened images (``image_shape``), BCOP orthogonal convolutions with
  GroupSort, then Björck layers (Li et al. 2019), trained like ``dense``;
* ``projection``: ``g(<u, x> / |u|_*)``, a direction found on the fitting split (means,
  covariances, third and fourth moments, each refined by ascent of the 1-D W1, the
  best kept on validation) and the 1-D Kantorovich potential of the projections; when
  kept, the potential is refit on all the training points
  (:mod:`wassnet.w1.structured`);
* ``subspace``: a small Björck + GroupSort network on a learned orthonormal projection
  to ``R^k`` (``k <= 3``), started from the best directions, trained like ``dense``.

**Other metrics** (``cityblock``: l1, ``chebyshev``: l-inf). The critic must be
1-Lipschitz from the metric's norm to the line, certified by
:func:`wassnet.nn.lipschitz_bound` with ``p`` = 1 or inf. ``linear`` is then the best
linear critic in that norm (the signs of the mean difference in l1; the coordinate
where the means differ most in l-inf), ``radial`` the distance to a center in that
norm, ``transport`` extends the pair with that metric's distances, and ``dense`` and
``conv`` are plain layers with GroupSort whose weights are projected onto induced
lp norm <= 1 after every step (:mod:`wassnet.nn.projection`).

Every critic is a plain ``nn.Sequential`` of wassnet layers, so its Lipschitz constant
is certified by :func:`wassnet.nn.lipschitz_bound`; nothing here is assumed
1-Lipschitz. The choice uses only the training points given, so a fold scored by the
returned critic is held out from everything the critic saw.

**The families are a registry** (:data:`POPULATION_FAMILIES`, entries of
:class:`wassnet.critics.PopulationFamily`): each entry names the family's network
builder, closed-form start, fit routine, what is redone once it is kept and whether it
reports the directions it reads. A new family is one entry there (and its name in
:data:`wassnet.w1.options.CRITICS`, the torch-free list the command line offers).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from wassnet.critics import (
    FamilyRegistry,
    FittedCritic,
    PopulationFamily,
    linear_critic,
    make_critic,
    radial_critic,
)
from wassnet.critics.training import (
    DualTrainingOptions,
    critic_values,
    dual_and_stderr,
    train_dual,
)
from wassnet.errors import InputError
from wassnet.nn import (
    NORMS,
    BjorckLinear,
    lipschitz_bound,
    norm_ratio,
    register_lipschitz_rule,
)
from wassnet.norms import Norm, by_metric
from wassnet.ot import TransportProblem
from wassnet.ot.metrics import metric_cdist
from wassnet.w1.options import PopulationOptions, SampleOptions
from wassnet.w1.structured import (
    SUBSPACE_DIMS,
    candidate_directions,
    orthonormal_rows,
    projection_critic,
    refine_direction,
    subspace_critic,
)

__all__ = [
    "POPULATION_FAMILIES",
    "TRANSPORT_MAX_POINTS",
    "FittedCritic",
    "TransportCritic",
    "build_critic",
    "critic_values",
    "fit_critic",
]

#: The ``transport`` critic solves the training points' OT on at most this many points
#: per side (a random subsample beyond).
TRANSPORT_MAX_POINTS = 4000

#: A validation gain below this many standard errors of the validation dual is noise:
#: it does not reset early stopping's patience (the best state is still kept).
_NOISE = 0.25


class TransportCritic(nn.Module):
    """``(min_j (|x - b_j| + v_j) + max_i (u_i - |x - a_i|)) / 2``: a dual pair extended.

    ``|.|`` is the norm of ``metric``. Each half is a minimum (maximum) of 1-Lipschitz
    functions, so the critic is 1-Lipschitz for that norm whatever the offsets; when
    ``u_i - v_j <= |a_i - b_j|`` (a feasible pair), it is ``>= u_i`` at ``a_i`` and
    ``<= v_j`` at ``b_j``, so its dual on those points is at least the pair's. Distances
    are computed directly (no ``|x|^2 + |y|^2 - 2 x.y`` cancellation), in the buffers'
    dtype.
    """

    def __init__(
        self,
        a: torch.Tensor,
        u: torch.Tensor,
        b: torch.Tensor,
        v: torch.Tensor,
        metric: str = "euclidean",
    ) -> None:
        super().__init__()
        self.metric = metric
        self.register_buffer("anchors_a", a)
        self.register_buffer("offsets_a", u)
        self.register_buffer("anchors_b", b)
        self.register_buffer("offsets_b", v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        to_b = metric_cdist(x, self.anchors_b, self.metric)
        to_a = metric_cdist(x, self.anchors_a, self.metric)
        below = (to_b + self.offsets_b).amin(dim=1)
        above = (self.offsets_a - to_a).amax(dim=1)
        return (0.5 * (below + above)).unsqueeze(1)


def _transport_rule(p: float):
    """1 in the critic's own metric; in another lp, the norms' ratio on ``R^d``."""

    def rule(module: nn.Module, shape: tuple[int, ...]) -> tuple[float, str]:
        bound = norm_ratio(by_metric(module.metric).p, p, int(shape[-1]))
        return bound, "upper: mean of a min and a max of distances in the critic's metric"

    return rule


for _p in NORMS:
    register_lipschitz_rule(TransportCritic, _transport_rule(_p), _p)


def _transport_critic(
    a: torch.Tensor, b: torch.Tensor, seed: int, metric: str
) -> TransportCritic | None:
    """The training points' optimal dual pair, extended (``None`` on the line)."""
    from wassnet.w1.sample import sample_bracket

    rng = np.random.default_rng(seed)
    if len(a) > TRANSPORT_MAX_POINTS:
        a = a[torch.from_numpy(rng.choice(len(a), TRANSPORT_MAX_POINTS, replace=False))]
    if len(b) > TRANSPORT_MAX_POINTS:
        b = b[torch.from_numpy(rng.choice(len(b), TRANSPORT_MAX_POINTS, replace=False))]
    xa, xb = a.detach().cpu().double().numpy(), b.detach().cpu().double().numpy()
    problem = TransportProblem.build(xa, xb, metric=metric)
    bracket = sample_bracket(problem, SampleOptions(tol=1e-6), device="cpu", seed=seed)
    if bracket.potentials is None:
        return None
    u, v = (torch.from_numpy(np.ascontiguousarray(p)) for p in bracket.potentials)
    critic = TransportCritic(torch.from_numpy(xa), u, torch.from_numpy(xb), v, metric)
    return critic.to(a.device, a.dtype)  # any offsets keep it 1-Lipschitz


# ------------------------------------------------------------------ the families' parts


def _dense_network(dim: int, options: PopulationOptions, norm: Norm) -> nn.Sequential:
    """The ``dense`` family: :func:`wassnet.critics.make_critic`'s ``dense`` preset at
    ``options.hidden`` (plain layers, to be projected, outside l2)."""
    group = 4 if options.activation == "groupsort" else 2
    return make_critic(
        "dense",
        dim,
        constraint="orthogonal" if norm.is_euclidean else "projection",
        hidden=options.hidden,
        activation=options.activation,
        group_size=group,
        iters=options.iters,
    )


def _conv_network(dim: int, options: PopulationOptions, norm: Norm) -> nn.Sequential:
    """The ``conv`` family: flattened points unflattened to ``options.image_shape``, then
    the ``conv-small`` preset (circular padding) at ``options.hidden``."""
    shape = options.image_shape
    if shape is None or math.prod(shape) != dim:
        raise InputError(f"image_shape {shape} does not hold {dim} values per point")
    convs = make_critic(
        "conv-small",
        shape,
        constraint="orthogonal" if norm.is_euclidean else "projection",
        hidden=options.hidden,
        iters=options.iters,
        padding_mode="circular",
    )
    return nn.Sequential(nn.Unflatten(1, shape), *convs)


def _set_weight(layer: nn.Linear, weight: torch.Tensor) -> None:
    with torch.no_grad():
        if isinstance(layer, BjorckLinear):
            layer.parametrizations.weight.original.copy_(weight)
        else:
            layer.weight.copy_(weight)


def best_linear_direction(diff: torch.Tensor, metric: str) -> torch.Tensor | None:
    """The ``w`` of dual norm 1 maximizing ``<w, diff>`` (``None`` for ``diff = 0``):
    ``diff / |diff|_2`` (euclidean), ``sign(diff)`` (cityblock: dual l-inf), the signed
    coordinate of the largest ``|diff_k|`` (chebyshev: dual l1)."""
    if not bool((diff != 0).any()):
        return None
    norm = by_metric(metric)
    if norm.is_cityblock:
        return torch.sign(diff)
    if norm.is_chebyshev:
        k = int(diff.abs().argmax())
        w = torch.zeros_like(diff)
        w[k] = torch.sign(diff[k])
        return w
    return diff / torch.linalg.vector_norm(diff)


def _start_linear(critic: nn.Sequential, a: torch.Tensor, b: torch.Tensor, metric: str) -> None:
    """The best linear direction for the means of ``a`` and ``b``."""
    w = best_linear_direction(a.mean(0) - b.mean(0), metric)
    if w is not None:
        _set_weight(critic[0], w.unsqueeze(0))


def _start_radial(critic: nn.Sequential, a: torch.Tensor, b: torch.Tensor, metric: str) -> None:
    """Centered at the pooled mean, the sign that makes the dual >= 0."""
    center = 0.5 * (a.mean(0) + b.mean(0))
    with torch.no_grad():
        critic[0].offset.copy_(-center)
        gap = critic[1](a - center).mean() - critic[1](b - center).mean()
    _set_weight(critic[2], torch.ones(1, 1) if gap >= 0 else -torch.ones(1, 1))


def _refit_linear(critic: nn.Module, a: torch.Tensor, b: torch.Tensor, metric: str) -> nn.Module:
    """The closed form costs nothing: redone on every training point."""
    _start_linear(critic, a, b, metric)  # type: ignore[arg-type]
    return critic


def _refit_projection(
    critic: nn.Module, a: torch.Tensor, b: torch.Tensor, metric: str
) -> nn.Module:
    """The direction stays; the 1-D potential sees every training point."""
    u = critic[0].weight.detach().cpu().double().numpy()[0]
    xa, xb = a.detach().cpu().double().numpy(), b.detach().cpu().double().numpy()
    return projection_critic(u, xa, xb, metric).to(a.device)


def _dual(critic: nn.Module, a: torch.Tensor, b: torch.Tensor) -> float:
    return dual_and_stderr(critic, a, b)[0]


@dataclass
class _Split:
    fit_a: torch.Tensor
    fit_b: torch.Tensor
    val_a: torch.Tensor
    val_b: torch.Tensor


def _split(a: torch.Tensor, b: torch.Tensor, fraction: float, rng: np.random.Generator) -> _Split:
    def cut(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
        k = min(len(x) - 1, max(1, round(fraction * len(x))))
        return x[perm[k:]], x[perm[:k]]

    fit_a, val_a = cut(a)
    fit_b, val_b = cut(b)
    return _Split(fit_a, fit_b, val_a, val_b)


def _train(
    critic: nn.Module,
    data: _Split,
    options: PopulationOptions,
    deadline: float,
    generator: torch.Generator,
    projection: float | None = None,
    permutation_start: bool = False,
) -> tuple[float, int]:
    """Adam on the training dual with early stopping; returns (best val dual, steps).
    ``projection``: ``p`` of the projection after every step (plain layers), or ``None``;
    ``permutation_start``: in l1, start the plain layers at signed permutations."""
    training = DualTrainingOptions(
        steps=options.steps,
        batch_size=options.batch_size,
        lr=options.lr,
        eval_every=options.eval_every,
        patience=options.patience,
        min_gain=_NOISE,
        projection=projection,
        permutation_start=permutation_start,
    )
    fit = train_dual(
        critic,
        data.fit_a,
        data.fit_b,
        training,
        generator=generator,
        validation=(data.val_a, data.val_b),
        deadline=deadline,
    )
    return float(fit.best_validation), fit.steps  # type: ignore[arg-type]


def _certified(critic: nn.Module, dim: int, metric: str) -> tuple[nn.Module, float]:
    """The critic in float64 (eval mode) and its certified Lipschitz bound (the
    metric's norm on inputs)."""
    module = copy.deepcopy(critic).cpu().double().eval()
    bound = lipschitz_bound(module, (dim,), p=by_metric(metric).p).bound
    if not (math.isfinite(bound) and bound > 0):
        raise RuntimeError(f"critic has an unusable Lipschitz bound {bound}")
    return module, bound


class _Directions:
    """Candidate directions of one fold's fitting split, found once (lazily) and
    refined, best validation W1 first (:mod:`wassnet.w1.structured`)."""

    def __init__(self, data: _Split, seed: int, metric: str) -> None:
        self.data, self.seed, self.metric = data, seed, metric
        self._found: list[tuple[np.ndarray, float]] | None = None

    def numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        d = self.data
        return tuple(
            x.detach().cpu().double().numpy() for x in (d.fit_a, d.fit_b, d.val_a, d.val_b)
        )  # type: ignore[return-value]

    def found(self) -> list[tuple[np.ndarray, float]]:
        if self._found is None:
            rng = np.random.default_rng([self.seed, 29])
            fa, fb, va, vb = self.numpy()
            refined = [
                refine_direction(u, (fa, fb), (va, vb), rng, self.metric)
                for u in candidate_directions(fa, fb, rng)
            ]
            self._found = sorted(refined, key=lambda r: -r[1])
        return self._found


@dataclass
class _Fold:
    """What a family's fit routine is given: one fold's split and how to fit on it."""

    data: _Split
    options: PopulationOptions
    deadline: float
    generator: torch.Generator
    seed: int
    metric: str
    directions: _Directions


# --------------------------------------------------------------- the families' fits

_Fitted = tuple[nn.Module, float, int] | None


def _built(family: PopulationFamily, fold: _Fold) -> nn.Sequential:
    """The family's network on the fold's device, at its closed-form start."""
    data = fold.data
    dim = data.fit_a.shape[1]
    critic = family.build(dim, fold.options, by_metric(fold.metric)).to(data.fit_a.device)  # type: ignore[misc]
    if family.start is not None:
        family.start(critic, data.fit_a, data.fit_b, fold.metric)
    return critic


def _fit_closed_form(family: PopulationFamily, fold: _Fold) -> _Fitted:
    """The start is the training optimum: nothing to train."""
    critic = _built(family, fold).eval()
    return critic, _dual(critic, fold.data.val_a, fold.data.val_b), 0


def _fit_trained(family: PopulationFamily, fold: _Fold) -> _Fitted:
    """Trained on the dual (:func:`_train`); a ``projected`` family's plain layers are
    projected in lp (``p != 2``) and start at signed permutations in l1."""
    critic = _built(family, fold)
    norm = by_metric(fold.metric)
    projection = norm.p if family.projected and not norm.is_euclidean else None
    value, count = _train(
        critic, fold.data, fold.options, fold.deadline, fold.generator, projection, True
    )
    return critic, value, count


def _fit_projection(family: PopulationFamily, fold: _Fold) -> _Fitted:
    """The best direction found and the 1-D potential of the fitting points on it."""
    fa, fb = fold.directions.numpy()[:2]
    u = fold.directions.found()[0][0]
    critic = projection_critic(u, fa, fb, fold.metric).to(fold.data.val_a.device)
    return critic, _dual(critic, fold.data.val_a.double(), fold.data.val_b.double()), 0


def _fit_transport(family: PopulationFamily, fold: _Fold) -> _Fitted:
    """The fitting points' optimal dual pair, extended (``None`` on the line)."""
    data = fold.data
    extended = _transport_critic(data.fit_a, data.fit_b, fold.seed, fold.metric)
    if extended is None:
        return None
    critic: nn.Module = nn.Sequential(extended).eval()
    return critic, _dual(critic, data.val_a, data.val_b), 0


def _fit_subspace(family: PopulationFamily, fold: _Fold) -> _Fitted:
    """A network on a learned ``k``-dimensional projection, ``k`` in ``SUBSPACE_DIMS``
    below ``d``, started from the best directions; the best ``k`` on validation."""
    data, options = fold.data, fold.options
    dims = [k for k in SUBSPACE_DIMS if k < data.fit_a.shape[1]]
    if not dims:
        return None  # d <= 2: the projection and dense critics cover it
    rng = np.random.default_rng(fold.seed)
    found = [u for u, _ in fold.directions.found()]
    hidden = tuple(min(h, 32) for h in options.hidden) or (32,)
    norm = by_metric(fold.metric)
    projection = norm.p if family.projected and not norm.is_euclidean else None
    best: tuple[nn.Module, float, int] | None = None
    for k in dims:
        if best is not None and time.perf_counter() > fold.deadline:
            break
        rows = orthonormal_rows(found, k, rng)
        critic = subspace_critic(rows, hidden, options.iters, fold.metric).to(data.fit_a.device)
        value, count = _train(critic, data, options, fold.deadline, fold.generator, projection)
        if best is None or value > best[1]:
            best = (critic, value, count + (best[2] if best else 0))
        else:
            best = (best[0], best[1], best[2] + count)
    return best


#: The population bracket's critic families, simplest first: one entry per family.
POPULATION_FAMILIES = FamilyRegistry(
    "critic family",
    [
        PopulationFamily(
            "linear",
            _fit_closed_form,
            build=lambda dim, options, norm: linear_critic(dim, norm),
            start=_start_linear,
            refit=_refit_linear,
            help="<w, x>, |w|_* = 1: the best direction for the means (closed form)",
        ),
        PopulationFamily(
            "radial",
            _fit_trained,
            build=lambda dim, options, norm: radial_critic(dim, norm),
            start=_start_radial,
            help="+-|x - c| + t, the center learned from the pooled mean",
        ),
        PopulationFamily(
            "projection",
            _fit_projection,
            refit=_refit_projection,
            reads_subspace=True,
            help="the 1-D potential along a direction found on the fitting points",
        ),
        PopulationFamily(
            "transport",
            _fit_transport,
            help="the fitting points' optimal dual pair extended by c-transforms",
        ),
        PopulationFamily(
            "subspace",
            _fit_subspace,
            projected=True,
            reads_subspace=True,
            help="a small network on a learned projection to R^k, k <= 3",
        ),
        PopulationFamily(
            "dense",
            _fit_trained,
            build=_dense_network,
            projected=True,
            help="Björck + GroupSort layers of widths `hidden`",
        ),
        PopulationFamily(
            "conv",
            _fit_trained,
            build=_conv_network,
            projected=True,
            help="BCOP convolutions, then Björck layers, on points of `image_shape`",
        ),
    ],
)


def build_critic(
    name: str, dim: int, options: PopulationOptions, metric: str = "euclidean"
) -> nn.Sequential:
    """The network of family ``name`` on ``R^dim`` for ``metric``, at its default start
    (see :data:`POPULATION_FAMILIES`).

    For ``cityblock`` and ``chebyshev`` the ``dense`` and ``conv`` critics are plain
    layers: they are 1-Lipschitz only once projected (:func:`_train` does it)."""
    family = POPULATION_FAMILIES[name]
    if family.build is None:
        raise InputError(f"critic family {name!r} has no fixed network: its fit makes it")
    return family.build(dim, options, by_metric(metric))


def _fit_family(
    name: str,
    data: _Split,
    options: PopulationOptions,
    deadline: float,
    generator: torch.Generator,
    seed: int,
    metric: str,
    directions: _Directions | None = None,
) -> _Fitted:
    """One family fitted on ``data``: (critic, validation dual, steps), or ``None``.
    ``directions``: the fold's candidate directions, shared by the structured families
    (found on first use; default: this call's own)."""
    if directions is None:
        directions = _Directions(data, seed, metric)
    family = POPULATION_FAMILIES[name]
    return family.fit(family, _Fold(data, options, deadline, generator, seed, metric, directions))


def fit_critic(
    a: torch.Tensor,
    b: torch.Tensor,
    options: PopulationOptions,
    *,
    deadline: float,
    seed: int,
    metric: str = "euclidean",
) -> FittedCritic:
    """Fit every family of ``options.critics`` on ``a``, ``b``; keep the best on validation.

    ``a``, ``b`` are float32 training points (on the device where the fits run);
    ``metric`` the ground cost whose norm the critics are 1-Lipschitz in. The
    families are tried simplest first; each fit stops at ``deadline``
    (``time.perf_counter()`` seconds) with its best state so far, and a family that
    has not started by then is skipped (the first family always runs). The family
    kept is refit on all of ``a``, ``b`` where its entry says so.
    """
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    data = _split(a, b, options.validation, rng)
    directions = _Directions(data, int(rng.integers(2**62)), metric)
    scores: dict[str, float] = {}
    steps: dict[str, int] = {}
    best: tuple[float, str, nn.Module] | None = None
    for name in options.critics:
        if best is not None and time.perf_counter() > deadline:
            break
        torch.manual_seed(int(rng.integers(2**62)))
        fitted = _fit_family(
            name, data, options, deadline, generator, int(rng.integers(2**31)), metric, directions
        )
        if fitted is None:
            continue
        critic, scores[name], steps[name] = fitted
        if best is None or scores[name] > best[0]:
            best = (scores[name], name, critic)
    if best is None:
        raise InputError("no critic family could be fitted ('transport' needs d >= 2)")
    family, critic = POPULATION_FAMILIES[best[1]], best[2]
    if family.refit is not None:
        critic = family.refit(critic, a, b, metric)
    module, bound = _certified(critic, a.shape[1], metric)
    return FittedCritic(family.name, module, bound, scores, steps, family.directions(module))
