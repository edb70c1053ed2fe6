r"""Lipschitz networks by projection: plain layers, weights projected after each update.

The second way to build a Lipschitz network (beside the Björck / BCOP
reparametrizations): train plain ``nn.Linear`` / ``nn.Conv2d`` layers and, after every
optimizer step, project each weight back onto the set where the layer's induced
lp -> lp norm is at most 1 (a proximal step). Between projections the layers run at
plain speed. The network's bound is then the product of the layers' norms times those
of its activations (1 for GroupSort and ReLU in every lp), certified from the weights
by :func:`wassnet.nn.lipschitz_bound` with the same ``p``, never assumed.

Per norm, for a dense weight ``W`` (``[out, in]``):

* ``p = inf`` (max row abs sum): each row is projected onto the l1 ball (the exact
  Euclidean projection onto the set, which is a product of balls; Michelot's
  threshold iteration, see :func:`project_l1_ball_`);
* ``p = 1`` (max column abs sum): each column onto the l1 ball (exact Euclidean
  projection likewise);
* ``p = 2``: Björck iterations in place, no autograd, warm-started from the current
  weight (which the previous projection left orthonormal): the weight is mapped to
  the nearby orthonormal matrix (the polar factor), not to the spectral-norm ball.

For a convolution kernel ``K`` (``[out, in, kh, kw]``): ``p = inf`` projects each output
channel's kernel, ``p = 1`` each input channel's slice, onto the l1 ball (their abs
sums bound the operator norms for any padding and stride); ``p = 2`` divides the
kernel by its certified operator norm on ``input_shape`` when that exceeds 1 (a
rescaling, not a Euclidean projection).

Guarantee: after :func:`project_` every projected layer's norm is at most 1 up to the
float rounding of the weights (about 1e-7 relative in float32; the certificate
computed afterwards shows the exact value). Parametrized layers (Björck, BCOP) are
left alone: they carry their own constraint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

from wassnet.errors import InputError
from wassnet.nn.bjorck import bjorck_orthonormalize
from wassnet.nn.lipschitz import NORMS, norm_p

__all__ = [
    "constrain",
    "permutation_init_",
    "project_",
    "project_conv_",
    "project_l1_ball_",
    "project_linear_",
]

#: Björck (order 1) converges for singular values in (0, sqrt(3)); start below that.
_BJORCK_SAFE = 1.7


@torch.no_grad()
def project_l1_ball_(x: torch.Tensor, dim: int = -1, radius: float = 1.0) -> torch.Tensor:
    """Project every slice of ``x`` along ``dim`` onto ``{v : |v|_1 <= radius}``, in place.

    The exact Euclidean projection: ``v_i -> sign(v_i) max(|v_i| - theta, 0)``, with the
    threshold ``theta`` found by Michelot's fixed point (``theta <- (sum of |v_i| above
    theta - radius) / their count``, which increases to the exact threshold and stops
    after finitely many steps, usually a handful; Condat 2016), vectorized over slices
    and without sorting. Slices already inside the ball are unchanged. A slice whose
    float sum still exceeds the radius by rounding is scaled by ``radius / sum`` (a
    relative change of a few ulps).
    """
    if not radius > 0:
        raise InputError(f"radius must be > 0, got {radius}")
    moved = x.movedim(dim, -1)  # a view: reductions run along the last dim, no copy
    magnitude = moved.abs()
    outside = _above(magnitude, radius)
    if not bool(outside.any()):
        return x
    # inside slices keep theta = 0 (unchanged); Michelot leaves them there anyway unless
    # their float sum rounds above the radius, which ``outside`` decides exactly
    theta = torch.where(outside, _l1_threshold(magnitude, radius), 0.0)
    projected = magnitude.sub_(theta).clamp_min_(0).mul_(moved.sign())
    # the float sum may land a few ulps above the radius: shrink those slices by it
    over = _above(projected.abs(), radius)
    if bool(over.any()):
        sums = projected.abs().to(torch.float64).sum(dim=-1, keepdim=True)
        projected = torch.where(over, projected * (radius / sums).to(x.dtype), projected)
    moved.copy_(projected)
    return x


def _above(magnitude: torch.Tensor, radius: float) -> torch.Tensor:
    """Slices (along the last dim; shape ``[..., 1]``) whose exact sum exceeds ``radius``:
    screened by the float sum, whose error is at most ``gamma_n`` of the sum in any
    order; when a slice lies within that margin of ``radius``, the sums are redone in
    float64 (a float32 sum can round a slice just above the radius down onto it)."""
    sums = magnitude.sum(dim=-1, keepdim=True)
    n = magnitude.shape[-1]
    unit = torch.finfo(magnitude.dtype).eps / 2
    margin = 2.0 * n * unit * radius + torch.finfo(magnitude.dtype).tiny
    near = (sums - radius).abs() <= margin
    if bool(near.any()):
        return magnitude.to(torch.float64).sum(dim=-1, keepdim=True) > radius
    return sums > radius + margin


def _l1_threshold(mag: torch.Tensor, radius: float) -> torch.Tensor:
    """Michelot's threshold for each slice of ``mag`` along its last dim (``[..., 1]``).

    ``theta <- theta + (sum (mag - theta)_+ - radius) / #{mag > theta}``, the same update
    as ``(sum of mag above theta - radius) / count``, in float arithmetic only (boolean
    masks cost several times more here); it stops when no slice's support changed, after
    which the exact update would not move ``theta`` again. Slices inside the ball keep
    ``theta = 0``.
    """
    theta = torch.zeros((*mag.shape[:-1], 1), dtype=mag.dtype, device=mag.device)
    count = torch.full_like(theta, -1.0)
    excess = torch.empty_like(mag)  # one buffer: fresh allocations cost page faults
    for _ in range(mag.shape[-1] + 1):  # at most one element leaves the support per step
        torch.sub(mag, theta, out=excess).clamp_min_(0)
        total = excess.sum(dim=-1, keepdim=True)
        support = excess.sign_().sum(dim=-1, keepdim=True)
        theta = torch.maximum(theta + (total - radius) / support.clamp_min(1), theta)
        if torch.equal(support, count):
            break
        count = support
    return theta


@torch.no_grad()
def _orthonormalize_(weight: torch.Tensor, iters: int) -> None:
    """Björck iterations (order 1) in place, rescaled first only when needed for convergence.

    ``sqrt(max row abs sum of G)``, ``G`` the Gram matrix of the smaller side, bounds the
    spectral norm (any induced norm bounds the spectral radius of ``G``); near an
    orthonormal matrix it is close to 1, so a warm-started weight is not shrunk (which
    would cost iterations), and the first iteration reuses ``G``:
    ``W <- W (3 I - G) / 2``. That map sends every singular value ``s`` in
    ``(0, sqrt(3))`` to ``s (3 - s^2) / 2 <= 1``: one iteration already restores the
    bound (up to float rounding); more iterations only bring ``W`` closer to orthonormal.
    """
    w = weight.detach()
    wide = w.shape[0] < w.shape[1]
    tall = w.mT if wide else w  # orthonormal columns of the tall form
    gram = tall.mT @ tall
    scale = math.sqrt(float(gram.abs().sum(dim=1).max()))
    if not math.isfinite(scale):
        raise InputError("the weight has non-finite entries")
    if iters < 1:
        return
    if scale >= _BJORCK_SAFE:  # 1.7 sits 2% below sqrt(3), far more than a float32 Gram's error
        weight.copy_(bjorck_orthonormalize(weight, iters=iters, scaling=scale * 1.01))
        return
    gram.mul_(-0.5).diagonal().add_(1.5)  # (3 I - G) / 2
    step = tall @ gram
    out = step.mT if wide else step
    if iters > 1:
        out = bjorck_orthonormalize(out, iters=iters - 1, scaling="none")
    weight.copy_(out)


@torch.no_grad()
def project_linear_(weight: torch.Tensor, p: float | str, iters: int = 3) -> torch.Tensor:
    """Make a dense weight ``[out, in]`` have induced lp norm <= 1 (see the module doc).

    ``iters``: Björck iterations for ``p = 2`` (3 suffice after a small optimizer step
    from an orthonormal weight; the first projection of a random weight needs ~30).
    """
    norm = norm_p(p)
    if norm == math.inf:
        return project_l1_ball_(weight, dim=1)
    if norm == 1:
        return project_l1_ball_(weight, dim=0)
    _orthonormalize_(weight, iters)
    return weight


@torch.no_grad()
def project_conv_(
    conv: nn.Conv2d, p: float | str, input_shape: Sequence[int] | None = None
) -> torch.Tensor:
    """Make a convolution's operator lp norm <= 1 (``input_shape`` [C, H, W] for p = 2)."""
    norm = norm_p(p)
    weight = conv.weight
    if norm != 2:  # each output channel's kernel (inf) or each input channel's slice (1)
        first = weight if norm == math.inf else weight.transpose(0, 1)
        slices = first.reshape(first.shape[0], -1).clone()
        project_l1_ball_(slices, dim=1)
        first.copy_(slices.view(first.shape))
        return weight
    if input_shape is None:
        raise InputError("projecting a convolution in l2 needs the input shape [C, H, W]")
    from wassnet.nn.lipschitz import lipschitz_bound

    bound = lipschitz_bound(conv, tuple(input_shape)).bound
    if bound > 1:
        weight.div_(math.nextafter(bound, math.inf))
    return weight


@torch.no_grad()
def permutation_init_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Set every plain ``nn.Linear`` / ``nn.Conv2d`` weight to a random signed partial
    permutation (each input feeds at most one output and each output reads at most one
    input, with weight +-1; a convolution does so at its central tap), biases to 0.

    Such a layer has induced norm exactly 1 in l1, l2 and l-inf and passes signals on
    at full strength: the starting point wassnet's trainers use for l1 projection. The
    default initialization, with each column projected onto the l1 ball, splits every
    input over all outputs with random signs, and the signal cancels layer after layer:
    measured on 3 Gaussian blobs in d = 8 (``dense-small``, 6 epochs), an l1-projected
    classifier stayed at chance from the default start and certified 93% of the points
    at eps = 0.02 from this one. (For l-inf, rows projected onto the l1 ball average
    their inputs and the default start trained better there: 99% against 90%.)
    Parametrized layers are left alone.
    """
    for layer in _layers(model):
        weight = layer.weight
        out_f, in_f = weight.shape[:2]
        k = min(out_f, in_f)
        rows = torch.randperm(out_f, generator=generator)[:k]
        cols = torch.randperm(in_f, generator=generator)[:k]
        signs = torch.randint(0, 2, (k,), generator=generator).to(weight.dtype) * 2 - 1
        matrix = torch.zeros(out_f, in_f, dtype=weight.dtype)
        matrix[rows, cols] = signs
        weight.zero_()
        if weight.dim() == 2:
            weight.copy_(matrix)
        else:
            kh, kw = weight.shape[2] // 2, weight.shape[3] // 2
            weight[:, :, kh, kw] = matrix.to(weight.device)
        if layer.bias is not None:
            layer.bias.zero_()
    return model


def _layers(model: nn.Module) -> list[nn.Module]:
    """The plain (not parametrized) dense and convolutional layers of ``model``."""
    return [
        m
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d)) and not parametrize.is_parametrized(m)
    ]


@torch.no_grad()
def project_(
    model: nn.Module,
    p: float | str,
    input_shape: Sequence[int] | None = None,
    iters: int = 3,
) -> nn.Module:
    """Project every plain ``nn.Linear`` / ``nn.Conv2d`` of ``model`` (see the module doc).

    ``input_shape`` (one input, no batch) is needed for convolutions with ``p = 2``:
    their input sizes are found by running ``model`` once on zeros.
    """
    norm = norm_p(p)
    shapes = _conv_input_shapes(model, input_shape) if norm == 2 else {}
    _project_layers(model, norm, shapes, iters)
    return model


def _project_layers(
    model: nn.Module, norm: float, shapes: dict[nn.Module, tuple[int, ...]], iters: int
) -> None:
    """Project each plain layer (``shapes``: the convolutions' input shapes, for l2)."""
    for layer in _layers(model):
        if isinstance(layer, nn.Linear):
            project_linear_(layer.weight, norm, iters)
        else:
            project_conv_(layer, norm, shapes.get(layer))


def _conv_input_shapes(
    model: nn.Module, input_shape: Sequence[int] | None
) -> dict[nn.Module, tuple[int, ...]]:
    convs = [m for m in _layers(model) if isinstance(m, nn.Conv2d)]
    if not convs or input_shape is None:
        return {}
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        shapes.setdefault(module, tuple(args[0].shape[1:]))

    handles = [c.register_forward_pre_hook(record) for c in convs]
    try:
        param = next(model.parameters())
        model(torch.zeros(1, *input_shape, dtype=param.dtype, device=param.device))
    finally:
        for h in handles:
            h.remove()
    return shapes


def constrain(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    p: float | str,
    input_shape: Sequence[int] | None = None,
    iters: int = 3,
) -> RemovableHandle:
    """Project ``model``'s weights now and after every ``optimizer.step()``.

    Works with any torch optimizer (an optimizer step post-hook). The first projection
    of a ``p = 2`` dense weight runs 30 Björck iterations (from a random
    initialization), later ones ``iters`` (warm-started). Remove with ``.remove()``.
    """
    norm = norm_p(p)
    if norm not in NORMS:  # pragma: no cover - norm_p refuses others
        raise InputError(f"p must be 1, 2 or inf, got {p!r}")
    # the convolutions' input shapes do not change: found once, not at every step
    shapes = _conv_input_shapes(model, input_shape) if norm == 2 else {}
    _project_layers(model, norm, shapes, max(iters, 30))

    def hook(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        _project_layers(model, norm, shapes, iters)

    return optimizer.register_step_post_hook(hook)
