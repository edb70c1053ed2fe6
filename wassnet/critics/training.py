"""Training a critic on the Kantorovich-Rubinstein dual: the one set-up, step and loop.

For a 1-Lipschitz critic ``f``, ``mean f(A) - mean f(B)`` is a lower bound on W1 between
the laws of ``A`` and ``B`` (on held-out points, in expectation).

* :func:`setup_projected_training`: the constrained-training set-up every job shares
  for plain layers kept Lipschitz by projection (the l1 permutation start, then the
  projection now and after every optimizer step);
* :func:`dual_step`: one optimizer step ascending the dual on two minibatches (an
  optional penalty, e.g. WGAN-GP's, subtracted);
* :func:`train_dual`: the loop: :func:`dual_step` on minibatches with Adam, validation,
  early stopping, a deadline. The population bracket's critics
  (:mod:`wassnet.w1.critic_fit`) and the GroupSort-vs-ReLU application train with it.

Nothing here makes an orthogonal critic Lipschitz: that is the architecture's job
(Björck, BCOP, GroupSort). Callers certify the trained critic with
:func:`wassnet.nn.lipschitz_bound` and divide by the bound before reading a value as a
W1 estimate.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from wassnet.errors import InputError
from wassnet.nn.lipschitz import norm_p
from wassnet.nn.projection import constrain, permutation_init_
from wassnet.norms import Norm, by_p

__all__ = [
    "DualFit",
    "DualStep",
    "DualTrainingOptions",
    "Sampler",
    "critic_values",
    "dual_and_stderr",
    "dual_step",
    "setup_projected_training",
    "train_dual",
]

#: A source of fresh points: ``sampler(n, generator) -> [n, ...]`` tensor.
Sampler = Callable[[int, torch.Generator], torch.Tensor]

_EVAL_BATCH = 8192


def setup_projected_training(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    norm: float | str | Norm,
    input_shape: Sequence[int] | None = None,
    *,
    permutation_start: bool = True,
) -> RemovableHandle:
    """Set up ``model``'s plain layers to train 1-Lipschitz in the lp norm ``norm`` by
    projection: the one constrained-training set-up of every job.

    Signature: ``setup_projected_training(model, optimizer, norm, input_shape=None, *,
    permutation_start=True) -> RemovableHandle``.

    1. For ``p = 1`` (and ``permutation_start``), every plain ``nn.Linear`` /
       ``nn.Conv2d`` starts at a random signed partial permutation
       (:func:`wassnet.nn.projection.permutation_init_`, from torch's global generator:
       projected default weights fade in l1).
    2. :func:`wassnet.nn.projection.constrain`: the weights are projected onto induced
       lp norm <= 1 now and after every ``optimizer.step()`` (l2 convolutions need
       ``input_shape``, one point's shape).

    ``norm``: a :class:`wassnet.norms.Norm`, or ``1``, ``2``, ``inf`` in any spelling
    :func:`wassnet.norms.by_p` reads (``"1"``, ``"inf"``, ``"l2"``...).
    Guarantee: from now on, after every optimizer step every plain layer's induced norm
    is at most 1 up to float rounding (parametrized layers are left alone); certify with
    :func:`wassnet.nn.lipschitz_bound`. Returns the hook's handle (``.remove()`` stops
    the projection). Call it after building the optimizer, before the first step.
    """
    resolved = by_p(norm)
    if permutation_start and resolved.is_cityblock:
        permutation_init_(model)
    return constrain(optimizer, model, resolved.p, input_shape)


class DualStep(NamedTuple):
    """What :func:`dual_step` did: ``dual = mean f(a) - mean f(b)`` (with its graph),
    ``loss = -dual + penalty_weight * penalty``, and ``penalty`` (``None`` without)."""

    dual: torch.Tensor
    loss: torch.Tensor
    penalty: torch.Tensor | None


def dual_step(
    critic: nn.Module,
    optimizer: torch.optim.Optimizer,
    a: torch.Tensor,
    b: torch.Tensor,
    penalty: Callable[[], torch.Tensor] | None = None,
    penalty_weight: float = 1.0,
) -> DualStep:
    """One optimizer step ascending ``mean f(a) - mean f(b)`` (minus a penalty).

    ``a`` and ``b`` go through the critic in one forward pass (a Björck / BCOP layer
    orthonormalizes once per step). ``penalty``, if given, is called after that pass
    (e.g. WGAN-GP's gradient penalty, drawing its interpolation weights then) and
    ``penalty_weight`` times its value is added to the loss. The gradients are reset
    (``set_to_none``) before the backward pass; projection hooks of
    :func:`setup_projected_training` run after the step.
    """
    n = len(a)
    values = critic(torch.cat([a, b])).reshape(-1)
    dual = values[:n].mean() - values[n:].mean()
    loss = -dual
    extra = None
    if penalty is not None:
        extra = penalty()
        loss = loss + penalty_weight * extra
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return DualStep(dual, loss, extra)


@dataclass(frozen=True)
class DualTrainingOptions:
    """How :func:`train_dual` runs.

    Attributes:
        steps: Adam steps at most.
        batch_size: points of each side per step (one forward pass on both halves, so
            a Björck / BCOP layer orthonormalizes once per step).
        lr: Adam's learning rate.
        decay: ``"constant"``, or ``"linear"`` to 0 over ``steps``.
        eval_every: with validation points, evaluate their dual every this many steps
            (and at the last step); the deadline is also checked then.
        patience: with validation points, stop after this many evaluations without a
            gain above ``min_gain`` standard errors (``None``: never stop early).
        min_gain: a validation gain below this many standard errors of the validation
            dual is noise: it does not reset the patience (the best state is still kept).
        projection: ``None``, or ``p`` (1, 2 or inf): the critic's plain dense and
            convolutional layers are projected onto induced lp norm <= 1 now and after
            every step (:func:`setup_projected_training`; l2 convolutions need
            ``input_shape`` of :func:`train_dual`).
        permutation_start: with ``projection = 1``, start the plain layers at signed
            permutations first (:func:`setup_projected_training`); off by default, for
            critics whose starting weights were chosen by the caller.
    """

    steps: int = 1000
    batch_size: int = 256
    lr: float = 5e-3
    decay: Literal["constant", "linear"] = "constant"
    eval_every: int = 50
    patience: int | None = 3
    min_gain: float = 0.25
    projection: float | str | None = None
    permutation_start: bool = False

    def __post_init__(self) -> None:
        if self.projection is not None:
            object.__setattr__(self, "projection", norm_p(self.projection))
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr}")
        if self.decay not in ("constant", "linear"):
            raise InputError(f"decay must be constant or linear, got {self.decay!r}")
        if self.patience is not None and self.patience < 1:
            raise InputError(f"patience must be >= 1 or None, got {self.patience}")


@dataclass
class DualFit:
    """What :func:`train_dual` did.

    Attributes:
        steps: steps taken (fewer than asked after early stopping or the deadline).
        history: the minibatch dual ``mean f(a) - mean f(b)`` at every step.
        best_validation: the validation dual of the returned weights (the best seen,
            the initial ones included), or ``None`` without validation points.
    """

    steps: int
    history: list[float] = field(default_factory=list)
    best_validation: float | None = None


def critic_values(critic: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``critic(x)`` flattened, without gradients, in batches."""
    with torch.no_grad():
        return torch.cat(
            [critic(x[i : i + _EVAL_BATCH]).reshape(-1) for i in range(0, len(x), _EVAL_BATCH)]
        )


def dual_and_stderr(critic: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """The dual ``mean f(a) - mean f(b)`` and its standard error."""
    fa, fb = critic_values(critic, a), critic_values(critic, b)
    var = fa.var() / len(fa) + fb.var() / len(fb) if min(len(fa), len(fb)) > 1 else 0.0
    return float(fa.mean() - fb.mean()), float(var) ** 0.5


def _draw(source: torch.Tensor | Sampler, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points: with replacement from a tensor, or fresh from a sampler."""
    if isinstance(source, torch.Tensor):
        index = torch.randint(len(source), (n,), generator=generator)
        return source[index.to(source.device)]
    return source(n, generator)


class _Selection:
    """Validation bookkeeping: the best state so far and early stopping's patience."""

    def __init__(self, critic: nn.Module, points: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.critic, self.points = critic, points
        critic.eval()
        self.best = self.anchor = dual_and_stderr(critic, *points)[0]
        self.best_state = copy.deepcopy(critic.state_dict())
        self.stale = 0

    def update(self, options: DualTrainingOptions) -> bool:
        """Evaluate now; whether training should stop (patience exhausted)."""
        self.critic.eval()
        value, stderr = dual_and_stderr(self.critic, *self.points)
        self.critic.train()
        if value > self.best:
            self.best, self.best_state = value, copy.deepcopy(self.critic.state_dict())
        if value > self.anchor + options.min_gain * stderr:
            self.anchor, self.stale = value, 0
        else:
            self.stale += 1
        return options.patience is not None and self.stale >= options.patience


def _run_steps(
    critic: nn.Module,
    sides: tuple[torch.Tensor | Sampler, torch.Tensor | Sampler],
    optimizer: torch.optim.Optimizer,
    options: DualTrainingOptions,
    generator: torch.Generator,
    select: _Selection | None,
    deadline: float | None,
) -> DualFit:
    """The loop of :func:`train_dual`: steps until ``options.steps``, early stopping or
    the deadline (both checked at evaluations)."""
    schedule = None
    if options.decay == "linear":
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0 - t / options.steps)
    fit = DualFit(steps=0)
    critic.train()
    for step in range(1, options.steps + 1):
        a = _draw(sides[0], options.batch_size, generator)
        b = _draw(sides[1], options.batch_size, generator)
        dual = dual_step(critic, optimizer, a, b).dual
        if schedule is not None:
            schedule.step()
        fit.steps = step
        fit.history.append(float(dual.detach()))
        if step % options.eval_every and step != options.steps:
            continue
        stop = select.update(options) if select is not None else False
        if stop or (deadline is not None and time.perf_counter() > deadline):
            break
    return fit


def train_dual(
    critic: nn.Module,
    a: torch.Tensor | Sampler,
    b: torch.Tensor | Sampler,
    options: DualTrainingOptions | None = None,
    *,
    generator: torch.Generator,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    deadline: float | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> DualFit:
    """Maximize ``mean f(a) - mean f(b)`` over the critic's weights (Adam, in place).

    Args:
        critic: any module mapping ``[N, ...]`` points to ``[N]`` or ``[N, 1]`` values.
        a, b: the two sides: tensors (minibatches drawn with replacement) or samplers
            ``(n, generator) -> points`` (fresh points every step).
        options: steps, batch size, learning rate, decay, validation cadence,
            projection.
        generator: every minibatch comes from it (same generator, same run).
        validation: held-out ``(a, b)`` points; if given, the weights with the best
            validation dual (initial ones included) are restored at the end and early
            stopping applies.
        deadline: a ``time.perf_counter()`` time; training stops at the first
            evaluation after it.
        input_shape: one point's shape, for ``options.projection = 2`` on convolutions.

    Returns:
        A :class:`DualFit`; the critic is left in eval mode.
    """
    options = options or DualTrainingOptions()
    optimizer = torch.optim.Adam(critic.parameters(), lr=options.lr)
    hook = None
    if options.projection is not None:  # projected before the first evaluation
        hook = setup_projected_training(
            critic,
            optimizer,
            options.projection,
            input_shape,
            permutation_start=options.permutation_start,
        )
    select = _Selection(critic, validation) if validation is not None else None
    fit = _run_steps(critic, (a, b), optimizer, options, generator, select, deadline)
    if hook is not None:
        hook.remove()
    if select is not None:
        critic.load_state_dict(select.best_state)
        fit.best_validation = select.best
    critic.eval()
    return fit
