r"""An lp PGD attack (l2, l-inf, l1), and the empirical check of certificates it supports.

:func:`pgd` is projected gradient descent on the logit margin
:math:`f_y(x') - \max_{j \ne y} f_j(x')` over the ball :math:`\|x' - x\|_p \le \varepsilon`
(one radius per example) intersected with the input box, with normalized gradient steps
(Madry et al. 2018), random restarts inside the ball, and early success tracking. It is
our own implementation (no attack library dependency), validated in the tests by
breaking points just beyond the exact decision boundary of linear classifiers.

:func:`attack_certified` runs it on every point with a positive certified radius, at
(just below) that radius, targeting the model's own prediction. A certificate is a
proof, so the answer must be "certified but broken: 0 of N"; any other count means the
radius or the Lipschitz bound is wrong. An attack that fails proves nothing by itself:
the ``beyond`` option also attacks the same points at a multiple of their radius, to
show the attack does find adversarial examples where they exist.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from wassnet.certify.radius import certified_radius, resolve_lipschitz
from wassnet.errors import InputError
from wassnet.nn import LipschitzCertificate
from wassnet.nn.lipschitz import norm_name, norm_p

__all__ = ["AttackCheck", "AttackOptions", "attack_certified", "pgd"]


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode, no parameter gradients, parametrizations evaluated once."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with parametrize.cached():
            yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    true = logits.gather(1, y[:, None])[:, 0]
    rival = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - rival


def _per_example(eps: float | torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    e = torch.as_tensor(eps, dtype=like.dtype, device=like.device)
    e = e.expand(n) if e.dim() == 0 else e.reshape(-1)
    if len(e) != n:
        raise InputError(f"eps must be a number or one radius per example ({n}), got {len(e)}")
    if not torch.isfinite(e).all() or (e < 0).any():
        raise InputError("eps must be finite radii >= 0")
    return e


def _project(delta: torch.Tensor, eps: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``delta`` projected onto the lp ball of radius ``eps`` (per example)."""
    view = (-1, *([1] * (delta.dim() - 1)))
    if p == math.inf:
        bound = eps.view(view)
        return torch.maximum(torch.minimum(delta, bound), -bound)
    if p == 1:
        from wassnet.nn.projection import project_l1_ball_

        unit = delta.flatten(1) / eps.clamp_min(1e-30)[:, None]
        return (project_l1_ball_(unit, dim=1) * eps[:, None]).view_as(delta)
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (eps / norms).clamp(max=1.0)
    return delta * factor.view(view)


def _ascent(grad: torch.Tensor, p: float) -> torch.Tensor:
    """The steepest-descent direction of unit lp norm for the margin's gradient."""
    view = (-1, *([1] * (grad.dim() - 1)))
    if p == math.inf:
        return grad.sign()
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)


def _random_start(x: torch.Tensor, eps: torch.Tensor, p: float, gen: torch.Generator):
    """A random point of the lp ball around 0 (l-inf: uniform in the box)."""
    view = (-1, *([1] * (x.dim() - 1)))
    if p == math.inf:
        u = torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        return (2 * u - 1) * eps.view(view)
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
    radius = torch.rand(len(x), generator=gen, dtype=x.dtype).to(x.device) * eps
    unit = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
    return _project(unit * radius.view(view), eps, p)


def _pgd_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: torch.Tensor,
    steps: int,
    restarts: int,
    step_size: float,
    box: tuple[float, float] | None,
    gen: torch.Generator,
    p: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep, per example, the iterate with the lowest margin over all steps and restarts."""
    view = (-1, *([1] * (x.dim() - 1)))
    best = x.clone()
    best_margin = torch.full((len(x),), float("inf"), device=x.device)
    alpha = (step_size * eps).view(view)
    for restart in range(restarts):
        delta = torch.zeros_like(x) if restart == 0 else _random_start(x, eps, p, gen)
        for _ in range(steps + 1):
            adv = x + delta
            if box is not None:
                adv = adv.clamp(*box)
            adv = adv.detach().requires_grad_(True)
            margin = _margin(model(adv), y)
            better = margin.detach() < best_margin
            best[better] = adv.detach()[better]
            best_margin = torch.where(better, margin.detach(), best_margin)
            if (best_margin < 0).all():
                break
            (grad,) = torch.autograd.grad(margin.sum(), adv)
            delta = _project((adv.detach() - x) - alpha * _ascent(grad, p), eps, p)
        if (best_margin < 0).all():
            break
    return best, best_margin < 0


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    steps: int = 50,
    restarts: int = 1,
    step_size: float = 0.1,
    box: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 512,
    seed: int = 0,
    progress: bool = False,
    p: float | str = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD in lp: look for ``x'`` with ``||x' - x||_p <= eps`` and ``argmax f(x') != y``.

    ``p = 2``: normalized-gradient steps, projection onto the ball; ``p = inf``:
    sign-gradient steps (FGSM-style), clipping to the box ``[-eps, eps]``; ``p = 1``:
    normalized-gradient steps, exact projection onto the l1 ball.

    Args:
        model: classifier ``[N, ...] -> [N, k]`` (run in eval mode, weights frozen).
        x: ``[N, ...]`` inputs; ``y``: ``[N]`` labels to move away from.
        eps: one radius for all, or ``[N]`` radii.
        steps: gradient steps per restart; ``restarts``: the first starts at ``x``, the
            others at a random point of the ball.
        step_size: step length as a fraction of ``eps`` (gradient direction normalized).
        box: clamp ``x'`` into this range (pixels: ``(0, 1)``); ``None``: no box.
        seed: for the random restarts.
        progress: show a progress bar over the batches.
        p: the norm (``2``, ``1`` or ``inf``).

    Returns:
        ``(x_adv, fooled)``: ``x_adv`` ``[N, ...]``, the iterate with the lowest margin
        (an adversarial point where one was found) and ``fooled`` ``[N]`` bool. Every
        ``x_adv`` lies in the ball (and the box). A ``False`` is no proof of robustness.
    """
    if steps < 1 or restarts < 1 or batch_size < 1:
        raise InputError("steps, restarts and batch_size must be >= 1")
    if not step_size > 0:
        raise InputError(f"step_size must be > 0, got {step_size}")
    if len(x) != len(y):
        raise InputError(f"{len(x)} inputs but {len(y)} labels")
    param = next(model.parameters(), None)
    device = x.device if param is None else param.device
    x = x.to(device)
    y = torch.as_tensor(y).to(device)
    e = _per_example(eps, len(x), x)
    norm = norm_p(p)
    gen = torch.Generator().manual_seed(seed)
    advs, fools = [], []
    from tqdm.auto import tqdm

    starts = tqdm(range(0, len(x), batch_size), desc="PGD", unit="batch", disable=not progress)
    with _frozen(model):
        for s in starts:
            sl = slice(s, s + batch_size)
            adv, fooled = _pgd_batch(
                model, x[sl], y[sl], e[sl], steps, restarts, step_size, box, gen, norm
            )
            advs.append(adv.detach())
            fools.append(fooled)
    return torch.cat(advs), torch.cat(fools)


@dataclass(frozen=True)
class AttackCheck:
    """Result of :func:`attack_certified`: how many certificates PGD broke (must be 0)."""

    attacked: int
    broken: int
    radius_scale: float
    steps: int
    restarts: int
    max_relative_perturbation: float
    beyond: float | None = None
    broken_beyond: int | None = None
    norm: str = "l2"

    def summary(self) -> str:
        """One line: ``certified but broken: B of N (...)`` and the control, if run."""
        label = {"l1": "L1", "l2": "L2", "linf": "L-inf"}.get(self.norm, self.norm)
        line = f"certified but broken: {self.broken} of {self.attacked}"
        line += (
            f" ({label} PGD, {self.steps} steps x {self.restarts} restarts"
            f" at {self.radius_scale:g} x radius)"
        )
        if self.beyond is not None:
            line += (
                f"; control at {self.beyond:g} x radius: {self.broken_beyond} of "
                f"{self.attacked} broken"
            )
        return line

    def to_dict(self) -> dict:
        return {
            "attacked": self.attacked,
            "broken": self.broken,
            "radius_scale": self.radius_scale,
            "steps": self.steps,
            "restarts": self.restarts,
            "max_relative_perturbation": self.max_relative_perturbation,
            "beyond": self.beyond,
            "broken_beyond": self.broken_beyond,
            "norm": self.norm,
            "summary": self.summary(),
        }


@dataclass(frozen=True)
class AttackOptions:
    """The options of :func:`attack_certified` (same names, same defaults), as one value.

    ``limit``: attack at most this many certified points (``None``: all);
    ``radius_scale``: attack at this fraction of each certified radius; ``steps`` and
    ``restarts``: the PGD budget; ``box``: the input range (``None``: unbounded);
    ``beyond``: also attack at this multiple of the radius, as a control of the attack's
    power; ``batch_size`` and ``seed``: as in :func:`pgd`.
    """

    limit: int | None = 1000
    radius_scale: float = 1.0 - 1e-4
    steps: int = 50
    restarts: int = 2
    box: tuple[float, float] | None = (0.0, 1.0)
    beyond: float | None = None
    batch_size: int = 512
    seed: int = 0

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        lipschitz: float | LipschitzCertificate | None,
        progress: bool = False,
        p: float | str = 2,
    ) -> AttackCheck:
        """:func:`attack_certified` with these options, radii in the lp norm."""
        return attack_certified(model, x, lipschitz, progress=progress, p=p, **asdict(self))


def _attack_radii(
    radius: torch.Tensor, x: torch.Tensor, box: tuple[float, float] | None, p: float | str
) -> torch.Tensor:
    """The radii to attack at (float32): the certified ones, capped at the box's lp
    diameter when there is a box (a ball that wide already holds the whole box, so the
    attack is the same; a constant network's radius is infinite). Without a box, points
    whose radius float32 cannot hold are left out (infinite)."""
    rs = radius.to(torch.float32)
    if box is None:
        return rs
    d = x[0].numel()
    width = float(box[1] - box[0])
    q = norm_p(p)
    diameter = width * (d if q == 1 else math.sqrt(d) if q == 2 else 1.0) * (1 + 1e-6)
    return rs.clamp(max=diameter)


def attack_certified(
    model: nn.Module,
    x: torch.Tensor,
    lipschitz: float | LipschitzCertificate | None = None,
    *,
    limit: int | None = 1000,
    radius_scale: float = 1.0 - 1e-4,
    steps: int = 50,
    restarts: int = 2,
    box: tuple[float, float] | None = (0.0, 1.0),
    beyond: float | None = None,
    batch_size: int = 512,
    seed: int = 0,
    progress: bool = False,
    p: float | str = 2,
) -> AttackCheck:
    """Attack every certified point at ``radius_scale`` x its certified lp radius.

    Points with a positive radius (at most ``limit`` of them, in order) are attacked with
    :func:`pgd` in the same norm ``p`` towards any class other than the model's own
    prediction. The default ``radius_scale`` sits just below 1 so that float32 rounding
    of the forward pass on the exact decision boundary is not counted. ``broken`` must
    be 0; ``beyond`` (e.g. 2.0) repeats the attack at that multiple of the radius as a
    control of its power. Radii beyond the box's diameter (a constant network's are
    infinite) are attacked at that diameter: the whole box is then within reach.
    """
    if not 0 < radius_scale <= 1:
        raise InputError(f"radius_scale must be in (0, 1], got {radius_scale}")
    if beyond is not None and beyond <= 1:
        raise InputError(f"beyond must be > 1, got {beyond}")
    bound = resolve_lipschitz(model, tuple(x.shape[1:]), lipschitz, p)
    pred, radius = certified_radius(model, x, bound, return_prediction=True, p=p)
    rs = _attack_radii(radius, x, box, p)
    keep = torch.nonzero((radius > 0) & torch.isfinite(rs)).flatten()
    if limit is not None:
        keep = keep[:limit]
    xs, ys, rs = x[keep], pred[keep], rs[keep]
    norm = norm_name(p)
    if len(keep) == 0:
        return AttackCheck(
            0, 0, radius_scale, steps, restarts, 0.0, beyond, 0 if beyond else None, norm
        )
    radii = radius[keep].to(torch.float64).cpu()  # the certified radii, as certified
    eps = rs * radius_scale
    adv, _ = pgd(
        model,
        xs,
        ys,
        eps,
        steps=steps,
        restarts=restarts,
        box=box,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        p=p,
    )
    broken = _confirmed_breaks(model, xs, adv, ys, radii, bound, p)
    dist = _distances(xs, adv, p)
    rel = float((dist / radii).max())
    broken_beyond = None
    if beyond is not None:
        adv2, _ = pgd(
            model,
            xs,
            ys,
            rs * beyond,
            steps=steps,
            restarts=restarts,
            box=box,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            p=p,
        )
        after2 = certified_radius(model, adv2, bound, return_prediction=True, p=p)[0]
        broken_beyond = int((after2 != ys).sum())
    return AttackCheck(
        len(keep), broken, radius_scale, steps, restarts, rel, beyond, broken_beyond, norm
    )


def _distances(xs: torch.Tensor, adv: torch.Tensor, p: float | str) -> torch.Tensor:
    """``|adv - x|_p`` per point, in float64 on the CPU (exact differences of floats)."""
    diff = adv.detach().cpu().double() - xs.detach().cpu().double()
    return diff.flatten(1).norm(p=norm_p(p), dim=1)


def _confirmed_breaks(
    model: nn.Module,
    xs: torch.Tensor,
    adv: torch.Tensor,
    ys: torch.Tensor,
    radii: torch.Tensor,
    bound: float,
    p: float | str,
) -> int:
    """How many adversarial points contradict a certificate: within the certified radius
    (float64 distance; float32 cannot place a perturbation to 1e-4 of a tiny radius) and
    predicted otherwise than ``x`` also by a float64 copy of the model (a float32 forward
    pass rounds logits by about 1e-7: a flip inside that is not the certificate's)."""
    after = certified_radius(model, adv, bound, return_prediction=True, p=p)[0]
    candidates = torch.nonzero(
        (after.cpu() != ys.cpu()) & (_distances(xs, adv, p) <= radii)
    ).flatten()
    if len(candidates) == 0:
        return 0
    exact = copy.deepcopy(model).to("cpu", torch.float64).eval()
    with torch.no_grad():
        before64 = exact(xs.detach().cpu().double()[candidates]).argmax(1)
        after64 = exact(adv.detach().cpu().double()[candidates]).argmax(1)
    return int((before64 != after64).sum())
