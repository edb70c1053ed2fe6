r"""The dual W1 estimator: a certified bracket ``lower <= W1(a, b) <= upper``.

Pipeline (:func:`estimate_w1`):

1. Normalize both clouds by one common shift and one scalar scale (Euclidean
   geometry is kept, W1 scales by the same scalar).
2. Train a 1-Lipschitz critic (Björck + GroupSort, :func:`wassnet.dense_critic`) on
   the Kantorovich–Rubinstein dual :math:`\max_f E_a f - E_b f` by minibatch Adam.
3. **Critic lower bound**: the dual value on all points divided by the critic's
   certified Lipschitz bound (:func:`wassnet.nn.lipschitz_bound`).
4. **Refined bracket** (when the passes over all ``n x m`` pairs fit the budget):
   column generation from the critic's values as potentials. Uniform clouds with
   ``n == m`` are an assignment problem (:func:`wassnet.ot.assignment.assignment_bracket`:
   sparse assignments, their dual potentials, fused float32 passes over all pairs with
   certified rounding margins); other weights a sparse LP (HiGHS). The lower bound is
   a dual made feasible on every pair by exact c-transforms
   (:func:`wassnet.ot.c_transform_bound`), the upper bound the cost of the plan.
5. **Upper bound** without refinement: the monotone coupling along the critic's values
   (any size, ``O(n log n)``), re-solved exactly within blocks.
6. Optionally the exact W1 from POT when it fits in memory, and a held-out dual value
   with a confidence interval for the population W1.

The bracket is certified: each side is a value attained by an explicit feasible
object (a dual pair checked on every point pair, or a transport plan), computed in
float64. The point estimate is the bracket's midpoint, so
``|estimate - W1| <= (upper - lower) / 2``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from wassnet.critics import dense_critic
from wassnet.io import check_same_dimension, validate_points, validate_weights
from wassnet.nn import export, lipschitz_bound
from wassnet.ot import (
    PairwiseCost,
    TiledCost,
    assignment_bracket,
    c_transform_bound,
    exact_w1,
    exact_w1_fits,
    sinkhorn_refine,
    sparse_transport_upper_bound,
    w1_1d,
)
from wassnet.runtime import resolve_device

__all__ = ["FloorResult", "HoldoutResult", "W1Result", "estimate_w1"]

ExactMode = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class HoldoutResult:
    """Dual value of the fitted critic on held-out points: an estimate of a lower
    bound on the population W1, with a normal 95% confidence interval."""

    value: float
    stderr: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int


@dataclass(frozen=True)
class FloorResult:
    """Certified bracket on W1 between two disjoint random halves of cloud A.

    Two finite samples of the *same* distribution are not at distance 0: in dimension
    d their W1 shrinks only like ``n^(-1/d)``. This bracket shows that sampling floor
    next to W1(A, B); halves have ``n/2`` points, so it slightly overstates the floor
    at size ``n``.
    """

    lower: float
    upper: float
    n: int


@dataclass
class W1Result:
    """The result of :func:`estimate_w1` (all distances in the input's units)."""

    lower: float
    upper: float
    estimate: float
    relative_gap: float
    exact: float | None
    error: float | None
    critic_lower: float | None
    lipschitz: float | None
    lower_method: str
    upper_method: str
    n_a: int
    n_b: int
    dim: int
    steps: int
    seed: int
    device: str
    timings: dict[str, float] = field(default_factory=dict)
    holdout: HoldoutResult | None = None
    floor: FloorResult | None = None
    history: list[float] = field(default_factory=list, repr=False)
    #: the critic's values on A and on B (1-Lipschitz, input units), for plots
    potentials: tuple[np.ndarray | None, np.ndarray | None] = field(
        default=(None, None), repr=False
    )

    def to_dict(self) -> dict:
        """A JSON-ready dict (the training curve and the potentials are left out)."""
        out = asdict(self)
        out.pop("history")
        out.pop("potentials")
        return out

    def summary(self) -> str:
        lines = [
            f"W1 estimate      {self.estimate:.6g}   "
            f"(n_a={self.n_a}, n_b={self.n_b}, d={self.dim})",
            f"certified lower  {self.lower:.6g}   [{self.lower_method}]",
            f"certified upper  {self.upper:.6g}   [{self.upper_method}]",
            f"relative gap     {self.relative_gap:.3%}",
        ]
        if self.exact is not None:
            lines.append(f"exact (POT)      {self.exact:.6g}   error {self.error:+.3g}")
        if self.holdout is not None:
            h = self.holdout
            lines.append(
                f"held-out dual    {h.value:.6g}  95% CI [{h.ci_low:.6g}, {h.ci_high:.6g}] "
                f"(n_a={h.n_a}, n_b={h.n_b})"
            )
        if self.floor is not None:
            f = self.floor
            lines.append(
                f"sampling floor   [{f.lower:.6g}, {f.upper:.6g}]   "
                f"(W1 between two random halves of A, {f.n} points each)"
            )
        timing = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        lines.append(f"time             {timing}; seed {self.seed}, device {self.device}")
        return "\n".join(lines)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> float:
    return float((values.double() * weights.double()).sum())


@torch.no_grad()
def _evaluate(critic: torch.nn.Module, x: torch.Tensor, batch: int = 65536) -> torch.Tensor:
    with parametrize.cached():
        return torch.cat([critic(x[s : s + batch]).squeeze(1) for s in range(0, len(x), batch)])


def _train_critic(
    xa: torch.Tensor,
    xb: torch.Tensor,
    wa: torch.Tensor,
    wb: torch.Tensor,
    *,
    hidden: Sequence[int],
    group_size: int,
    steps: int,
    batch_size: int,
    lr: float,
    time_budget: float | None,
    seed: int,
    progress: bool,
) -> tuple[torch.nn.Module, list[float], int]:
    torch.manual_seed(seed)
    critic = dense_critic(xa.shape[1], hidden=hidden, group_size=group_size).to(xa.device)
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - t / max(1, steps))
    gen = torch.Generator(device=xa.device).manual_seed(seed)
    uniform_a, uniform_b = bool((wa == wa[0]).all()), bool((wb == wb[0]).all())
    history: list[float] = []
    start, done = time.perf_counter(), 0
    bar = tqdm(range(steps), desc="training critic", disable=not progress, leave=False)
    for _ in bar:
        ia = (
            torch.randint(len(xa), (batch_size,), generator=gen, device=xa.device)
            if uniform_a
            else torch.multinomial(wa, batch_size, True, generator=gen)
        )
        ib = (
            torch.randint(len(xb), (batch_size,), generator=gen, device=xb.device)
            if uniform_b
            else torch.multinomial(wb, batch_size, True, generator=gen)
        )
        values = critic(torch.cat([xa[ia], xb[ib]]))  # one forward: Björck runs once
        dual = values[:batch_size].mean() - values[batch_size:].mean()
        opt.zero_grad(set_to_none=True)
        (-dual).backward()
        opt.step()
        sched.step()
        done += 1
        history.append(dual.item())
        if done % 50 == 0:
            bar.set_postfix(dual=f"{np.mean(history[-50:]):.4g}")
        if time_budget is not None and time.perf_counter() - start > time_budget:
            break
    bar.close()
    return critic.eval(), history, done


def _holdout_split(n: int, fraction: float, gen: np.random.Generator) -> tuple[np.ndarray, ...]:
    perm = gen.permutation(n)
    n_eval = round(n * fraction)
    if n_eval < 2 or n - n_eval < 2:
        raise ValueError(f"--holdout {fraction} leaves too few points on one side (n={n})")
    return perm[n_eval:], perm[:n_eval]


def _holdout(fa: torch.Tensor, fb: torch.Tensor, wa: np.ndarray, wb: np.ndarray) -> HoldoutResult:
    wa, wb = wa / wa.sum(), wb / wb.sum()
    fa64, fb64 = fa.double().cpu().numpy(), fb.double().cpu().numpy()
    ma, mb = float(wa @ fa64), float(wb @ fb64)
    # variance of a weighted mean: sum w_i^2 (f_i - mean)^2
    var = float(wa**2 @ (fa64 - ma) ** 2) + float(wb**2 @ (fb64 - mb) ** 2)
    se = math.sqrt(var)
    value = ma - mb
    return HoldoutResult(value, se, value - 1.96 * se, value + 1.96 * se, len(fa), len(fb))


def _floor(
    points: np.ndarray, weights: np.ndarray, gen: np.random.Generator, **options
) -> FloorResult:
    """The bracket of :class:`FloorResult`: A split at random into two halves."""
    n = len(points)
    if n < 2:
        raise ValueError("floor needs at least 2 points in A")
    perm = gen.permutation(n)
    half = n // 2
    first, second = np.sort(perm[:half]), np.sort(perm[half : 2 * half])
    wa = weights[first] / weights[first].sum()
    wb = weights[second] / weights[second].sum()
    points = np.asarray(points)
    result = estimate_w1(
        points[first], points[second], wa, wb, exact="never", floor=False, **options
    )
    return FloorResult(result.lower, result.upper, half)


def estimate_w1(
    a: np.ndarray | torch.Tensor | Sequence,
    b: np.ndarray | torch.Tensor | Sequence,
    weights_a: np.ndarray | Sequence[float] | None = None,
    weights_b: np.ndarray | Sequence[float] | None = None,
    *,
    hidden: Sequence[int] = (256, 256),
    group_size: int = 2,
    steps: int = 1000,
    batch_size: int = 1024,
    lr: float = 2e-3,
    time_budget: float | None = None,
    refine: bool | Literal["auto"] = "auto",
    refine_max_pairs: float = 2e10,
    refine_rounds: int = 8,
    refine_budget: float | None = None,
    sinkhorn_min_points: int = 40_000,
    exact: ExactMode = "auto",
    holdout: float | None = None,
    floor: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> W1Result:
    """Certified W1 (Euclidean cost) between two point clouds.

    Args:
        a, b: ``[n, d]`` and ``[m, d]`` points (``n != m`` allowed), or 1-D arrays of
            points on the line (solved exactly by sorting).
        weights_a, weights_b: optional nonnegative sample weights (normalized).
        hidden, group_size: the critic's widths and GroupSort group size.
        steps, batch_size, lr, time_budget: critic training (Adam, linear decay); the
            time budget (seconds) stops training early.
        refine: compute the refined bracket (column generation on the points), which
            costs a few passes over all ``n m`` pairs per round. ``"auto"``: when
            ``n m <= refine_max_pairs`` (uniform clouds with ``n == m``; other weights:
            ``n m <= 4e9``). ``refine_rounds`` bounds the rounds and ``refine_budget``
            (seconds) stops starting new ones. Weighted problems with
            ``n + m > sinkhorn_min_points`` first smooth the potentials by Sinkhorn
            sweeps (cheaper per pass).
        exact: ``"auto"`` computes POT's exact W1 when it fits in memory, ``"always"``
            tries regardless, ``"never"`` skips it.
        holdout: fraction of each cloud held out from training; the fitted critic's
            dual value on it, with a 95% CI, estimates W1 of the populations.
        floor: also bracket W1 between two disjoint random halves of A (same options,
            no exact reference): the sampling floor (:class:`FloorResult`).
        seed, device, progress: reproducibility, ``"cpu"``/``"cuda"`` (default: a GPU
            when present), and the progress bar.

    Returns:
        A :class:`W1Result`: ``lower <= W1(a, b) <= upper`` holds with certainty (up to
        float64 rounding), ``estimate`` is their midpoint.

    Raises:
        wassnet.io.InputError: empty, non-finite or mismatched inputs.
    """
    xa_np, xb_np = validate_points(a, "A"), validate_points(b, "B")
    check_same_dimension(xa_np, xb_np)
    n, m = len(xa_np), len(xb_np)
    wa = validate_weights(weights_a, n, "weights A") if weights_a is not None else np.full(n, 1 / n)
    wb = validate_weights(weights_b, m, "weights B") if weights_b is not None else np.full(m, 1 / m)
    if exact not in ("auto", "always", "never"):
        raise ValueError(f"exact must be auto, always or never, got {exact!r}")
    if holdout is not None and not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout}")
    dev = resolve_device(device)
    timings: dict[str, float] = {}
    training = {
        "hidden": hidden,
        "group_size": group_size,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "time_budget": time_budget,
        "seed": seed,
        "progress": progress,
    }

    floor_result = None
    if floor:
        t0 = time.perf_counter()
        floor_result = _floor(
            xa_np,
            wa,
            np.random.default_rng([seed, 1]),
            **training,
            refine=refine,
            refine_max_pairs=refine_max_pairs,
            refine_rounds=refine_rounds,
            refine_budget=refine_budget,
            sinkhorn_min_points=sinkhorn_min_points,
            device=device,
        )
        timings["floor"] = time.perf_counter() - t0

    if xa_np.ndim == 1:  # the line: exact at any size
        if holdout:
            raise ValueError(
                "holdout is not available for 1-D inputs: W1 on the line is computed exactly; "
                "compare held-out halves directly"
            )
        t0 = time.perf_counter()
        value = w1_1d(xa_np, xb_np, wa, wb)
        timings["exact_1d"] = time.perf_counter() - t0
        return W1Result(
            value,
            value,
            value,
            0.0,
            value,
            0.0,
            None,
            None,
            "exact (sorting)",
            "exact (sorting)",
            n,
            m,
            1,
            0,
            seed,
            "cpu",
            timings,
            floor=floor_result,
        )

    d = xa_np.shape[1]
    rng = np.random.default_rng(seed)
    fit_a, eval_a = _holdout_split(n, holdout, rng) if holdout else (np.arange(n), None)
    fit_b, eval_b = _holdout_split(m, holdout, rng) if holdout else (np.arange(m), None)

    # 1. one shift and one scale for both clouds: W1 scales by `scale`
    center = np.concatenate([xa_np[fit_a], xb_np[fit_b]]).mean(0)
    scale = float(np.sqrt(((np.asarray(xa_np[fit_a]) - center) ** 2).sum(1).mean())) or 1.0
    xa64 = torch.as_tensor((np.asarray(xa_np) - center) / scale, dtype=torch.float64, device=dev)
    xb64 = torch.as_tensor((np.asarray(xb_np) - center) / scale, dtype=torch.float64, device=dev)
    xa, xb = xa64.float(), xb64.float()
    wa_t = torch.as_tensor(wa, dtype=torch.float64, device=dev)
    wb_t = torch.as_tensor(wb, dtype=torch.float64, device=dev)

    # 2. the critic
    t0 = time.perf_counter()
    fit_wa = torch.as_tensor(wa[fit_a] / wa[fit_a].sum(), dtype=torch.float32, device=dev)
    fit_wb = torch.as_tensor(wb[fit_b] / wb[fit_b].sum(), dtype=torch.float32, device=dev)
    critic, history, done = _train_critic(
        xa[torch.as_tensor(fit_a, device=dev)],
        xb[torch.as_tensor(fit_b, device=dev)],
        fit_wa,
        fit_wb,
        **training,
    )
    timings["train"] = time.perf_counter() - t0

    # 3. the critic's certified lower bound: frozen weights, float64 evaluation
    t0 = time.perf_counter()
    lip = lipschitz_bound(critic, (d,)).bound
    frozen = export(critic).double()
    fa = _evaluate(frozen, xa64) * (scale / lip)  # 1-Lipschitz in the input's units
    fb = _evaluate(frozen, xb64) * (scale / lip)
    # the inputs were rounded when normalized (|error| <= 2u |x|), and the float64
    # forward pass rounds: charge both, generously, against the bound
    rounding = 2.0**-50 * scale * (
        _weighted_mean(xa64.norm(dim=1), wa_t) + _weighted_mean(xb64.norm(dim=1), wb_t)
    ) + 1e-12 * (_weighted_mean(fa.abs(), wa_t) + _weighted_mean(fb.abs(), wb_t))
    critic_lower = _weighted_mean(fa, wa_t) - _weighted_mean(fb, wb_t) - rounding
    lower, lower_method = critic_lower, "critic dual / certified Lipschitz bound"
    timings["certify"] = time.perf_counter() - t0

    # 4-5. refined bracket on the points (costs from the original points, float64),
    # or the scalable monotone coupling
    uniform_square = n == m and np.ptp(wa) == 0 and np.ptp(wb) == 0
    max_pairs = refine_max_pairs if uniform_square else min(refine_max_pairs, 4e9)
    do_refine = refine is True or (refine == "auto" and n * m <= max_pairs)
    t0 = time.perf_counter()
    cost = PairwiseCost(np.asarray(xa_np), np.asarray(xb_np), device=dev)
    if do_refine and uniform_square:
        small = n * m <= 1e8  # float64 passes are affordable: exact to 1e-13
        tiles = None if small else TiledCost(np.asarray(xa_np), np.asarray(xb_np), device=dev)
        bar = tqdm(desc="refining bracket", disable=not progress, leave=False, unit="round")

        def show(record: dict[str, float]) -> None:
            bar.update()
            bar.set_postfix(lower=f"{record['lower']:.6g}", upper=f"{record['upper']:.6g}")

        solved = assignment_bracket(
            cost, tiles, fa, fb, rounds=refine_rounds, time_budget=refine_budget, callback=show
        )
        bar.close()
        plan, best = solved.plan, solved.dual
        if best.value > lower:
            lower, lower_method = best.value, "c-transformed assignment dual on the points"
    elif do_refine:
        best = c_transform_bound(cost, fa, wa_t, wb_t)
        if n + m > sinkhorn_min_points:  # too large for LP rounds: smooth the potentials
            u, _v = sinkhorn_refine(
                cost,
                wa_t,
                wb_t,
                best.u,
                best.v,
                epsilons=[0.02 * scale, 0.01 * scale, 0.005 * scale],
                iters_per_eps=3,
            )
            refined = c_transform_bound(cost, u, wa_t, wb_t)
            best = refined if refined.value > best.value else best
        if best.value > lower:
            lower, lower_method = best.value, "c-transformed dual on the points"
        plan = sparse_transport_upper_bound(cost, wa, wb, best.u, best.v, rounds=refine_rounds)
        if plan.dual is not None and plan.dual.value > lower:
            lower, lower_method = plan.dual.value, "c-transformed LP dual on the points"
    else:
        plan = sparse_transport_upper_bound(cost, wa, wb, fa, fb, k=0)
    timings["bracket"] = time.perf_counter() - t0
    upper, upper_method = plan.value, plan.method

    # 6. exact reference and held-out value
    exact_value = None
    if exact == "always" or (exact == "auto" and exact_w1_fits(n, m)):
        t0 = time.perf_counter()
        exact_value = exact_w1(np.asarray(xa_np), np.asarray(xb_np), wa, wb)
        timings["exact"] = time.perf_counter() - t0
    holdout_result = None
    if holdout:
        holdout_result = _holdout(
            fa[torch.as_tensor(eval_a, device=dev)],
            fb[torch.as_tensor(eval_b, device=dev)],
            wa[eval_a],
            wb[eval_b],
        )

    estimate = 0.5 * (lower + upper)
    return W1Result(
        lower=lower,
        upper=upper,
        estimate=estimate,
        relative_gap=(upper - lower) / upper if upper > 0 else 0.0,
        exact=exact_value,
        error=None if exact_value is None else estimate - exact_value,
        critic_lower=critic_lower,
        lipschitz=lip,
        lower_method=lower_method,
        upper_method=upper_method,
        n_a=n,
        n_b=m,
        dim=d,
        steps=done,
        seed=seed,
        device=str(dev),
        timings=timings,
        holdout=holdout_result,
        floor=floor_result,
        history=[h * scale for h in history],
        potentials=(fa.cpu().numpy(), fb.cpu().numpy()),
    )
