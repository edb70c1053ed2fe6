r"""GroupSort versus ReLU critics for Wasserstein-1 estimation (Anil, Lucas & Grosse, 2019).

A CPU-scale reproduction of the Wasserstein distance experiments of "Sorting Out
Lipschitz Function Approximation" (ICML 2019): on pairs of distributions whose W1 is
known exactly, train Björck-orthonormalized critics that differ **only** in their
activation (MaxMin = GroupSort with groups of 2, FullSort, ReLU) and compare the
dual estimate each reaches with the truth. By Kantorovich–Rubinstein duality every
critic ``f`` with certified Lipschitz bound ``L`` gives

.. math::
    \frac{E_P f - E_Q f}{L} \le W_1(P, Q),

so the (fresh-sample) estimate of the left side can only undershoot the truth up to
sampling noise; how close it gets measures how expressive the critic is. The paper's
point: ReLU networks with orthogonal weights cannot preserve the gradient norm
(ReLU zeroes gradient entries layer after layer), so they cannot represent
functions like ``|x|`` or ``||x||`` with slope 1 and underestimate W1; GroupSort
critics are gradient-norm preserving and get close.

The pairs (exact W1 of the populations, any dimension ``d``):

* ``translation``: ``P = N(0, I_d)``, ``Q = P + t`` with ``|t| = 1``. ``W1 = |t|``:
  the coupling ``y = x + t`` costs ``|t|`` and the linear critic ``<x, t>/|t|``
  attains it.
* ``bimodal-1d``: along the first axis ``N(0, 1)`` versus the mixture
  ``(N(-1.5, 0.5^2) + N(1.5, 0.5^2)) / 2``, the other ``d - 1`` coordinates i.i.d.
  ``N(0, 1)`` in both. ``W1`` equals the 1-D distance ``\int |F - G|`` (product
  coupling above, critic ``g(x_1)`` below), computed by adaptive quadrature.
* ``sphere-dirac``: the uniform law on the unit sphere versus a Dirac at 0.
  ``W1 = 1``: every point of the sphere is at distance 1 from 0 (only one coupling
  exists), and ``||x||`` attains it.
* ``gauss-scale``: ``N(0, s^2 I_d)`` versus ``N(0, I_d)`` with ``s = 2``.
  ``W1 = (s - 1) E||X|| = (s - 1) \sqrt 2\, \Gamma((d+1)/2) / \Gamma(d/2)``: the
  coupling ``y = x / s`` costs that much and the critic ``||x||`` gains that much.

Next to the population truth, each pair also goes through the public estimator
(:func:`wassnet.estimate_w1` with ``target="both"`` and ``exact="always"``) on one
moderate sample of each law: the certified bracket and POT's exact W1 for those
finite samples (in high dimension far above the population value: sampling bias),
the population confidence bracket with the default critic ladder (this run's
widths and steps for the dense critic), and the
population estimate with only the dense critic, once per activation
(:func:`wassnet.w1.population_bracket`): the same comparison, cross-fitted on a
finite sample instead of trained on fresh draws.

Run::

    python apps/w1_groupsort_vs_relu.py --out runs/anil_w1 [--steps N] [--quick] [--seed S]

It writes ``results.json``, ``results.md`` (the table) and ``activations.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from scipy import integrate, optimize, stats
from torch.nn.utils import parametrize

import wassnet
from wassnet import dense_critic
from wassnet.nn import lipschitz_bound
from wassnet.w1 import (
    DualTrainingOptions,
    PopulationOptions,
    estimate_w1,
    population_bracket,
    train_dual,
)

ACTIVATIONS: tuple[str, ...] = ("maxmin", "fullsort", "relu")
GAUSS_SCALE = 2.0
BIMODAL_MEANS, BIMODAL_STD = (-1.5, 1.5), 0.5

Sampler = Callable[[int, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Config:
    """The budget of one run (the same for every pair and activation)."""

    dims: tuple[int, ...] = (2, 16)
    hidden: tuple[int, ...] = (128, 128, 128)
    steps: int = 800
    batch_size: int = 256
    lr: float = 2e-3
    iters: int = 15
    n_eval: int = 100_000
    n_grad: int = 2_000
    ref_n: int = 1_000
    seed: int = 0


QUICK = Config(
    dims=(3,),
    hidden=(16, 16),
    steps=40,
    batch_size=64,
    iters=8,
    n_eval=2_000,
    n_grad=200,
    ref_n=100,
)


@dataclass(frozen=True)
class Pair:
    """Two samplable laws ``P``, ``Q`` on ``R^dim`` with their exact W1."""

    name: str
    dim: int
    truth: float
    description: str
    sample_p: Sampler
    sample_q: Sampler


@dataclass
class CriticResult:
    """One trained critic, evaluated on fresh samples."""

    activation: str
    dual: float  # E_P f - E_Q f on the fresh samples (f as trained)
    lipschitz: float  # certified bound of f (lipschitz_bound)
    estimate: float  # dual / lipschitz: a lower estimate of W1
    stderr: float  # standard error of the estimate (fresh-sample noise)
    ratio: float  # estimate / truth
    grad_norm_mean: float  # mean ||grad f|| / lipschitz on fresh points of P
    train_dual_last: float  # mean minibatch dual over the last 10% of steps
    train_s: float


@dataclass
class PairResult:
    """All critics of one pair, and the sample-level reference from estimate_w1."""

    name: str
    dim: int
    truth: float
    description: str
    reference: dict
    critics: dict[str, CriticResult] = field(default_factory=dict)


# --- the distributions -------------------------------------------------------------


def _gaussian(dim: int, scale: float = 1.0, shift: torch.Tensor | None = None) -> Sampler:
    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        x = scale * torch.randn(n, dim, generator=gen)
        return x if shift is None else x + shift

    return sample


def _bimodal_first_axis(dim: int) -> Sampler:
    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        x = torch.randn(n, dim, generator=gen)
        side = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1  # -1 or +1
        x[:, 0] = side * BIMODAL_MEANS[1] + BIMODAL_STD * x[:, 0]
        return x

    return sample


def _sphere(dim: int) -> Sampler:
    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        x = torch.randn(n, dim, generator=gen)
        return x / x.norm(dim=1, keepdim=True)

    return sample


def _dirac(dim: int) -> Sampler:
    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.zeros(n, dim)

    return sample


def bimodal_w1_1d() -> float:
    r"""Exact 1-D W1 between ``N(0, 1)`` and the two-component mixture: ``\int |F - G|``.

    Adaptive quadrature on ``[-20, 20]`` (both tails beyond carry less than 1e-80),
    split at the crossings of the two CDFs so that the integrand is smooth on each
    piece; accurate to about 1e-10.
    """

    def gap(x: float) -> float:
        mix = 0.5 * sum(stats.norm.cdf(x, m, BIMODAL_STD) for m in BIMODAL_MEANS)
        return float(stats.norm.cdf(x) - mix)

    grid = np.linspace(-20.0, 20.0, 4001)
    values = np.array([gap(x) for x in grid])
    cuts = [-20.0]
    for i in np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0):
        cuts.append(optimize.brentq(gap, grid[i], grid[i + 1], xtol=1e-14))
    cuts.append(20.0)
    return float(
        sum(
            integrate.quad(lambda x: abs(gap(x)), lo, hi, epsabs=1e-13, limit=200)[0]
            for lo, hi in itertools.pairwise(cuts)
        )
    )


def mean_gaussian_norm(dim: int) -> float:
    r"""``E||X||`` for ``X ~ N(0, I_dim)``: ``\sqrt 2\, \Gamma((d+1)/2) / \Gamma(d/2)``."""
    return math.sqrt(2.0) * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))


def make_pairs(dims: Sequence[int]) -> list[Pair]:
    """The four known-truth pairs in each dimension of ``dims``."""
    bimodal = bimodal_w1_1d()
    pairs: list[Pair] = []
    for d in dims:
        t = torch.full((d,), 1.0 / math.sqrt(d))  # |t| = 1, not along an axis
        pairs += [
            Pair(
                "translation",
                d,
                1.0,
                "N(0,I) vs N(t,I), |t|=1",
                _gaussian(d),
                _gaussian(d, shift=t),
            ),
            Pair(
                "bimodal-1d",
                d,
                bimodal,
                "x1: N(0,1) vs (N(-1.5,.25)+N(1.5,.25))/2; other coords N(0,1)",
                _gaussian(d),
                _bimodal_first_axis(d),
            ),
            Pair(
                "sphere-dirac",
                d,
                1.0,
                "uniform on unit sphere vs Dirac at 0",
                _sphere(d),
                _dirac(d),
            ),
            Pair(
                "gauss-scale",
                d,
                (GAUSS_SCALE - 1.0) * mean_gaussian_norm(d),
                f"N(0,{GAUSS_SCALE:g}^2 I) vs N(0,I)",
                _gaussian(d, scale=GAUSS_SCALE),
                _gaussian(d),
            ),
        ]
    return pairs


# --- training and evaluation --------------------------------------------------------


def train_critic(
    pair: Pair, activation: str, cfg: Config, seed: int
) -> tuple[torch.nn.Module, list[float]]:
    """Maximize ``mean f(x) - mean f(y)`` on fresh minibatches by Adam (linear lr decay).

    The loop is :func:`wassnet.w1.train_dual`, the one the estimator's critics use. The
    seed fixes the initial weights and the minibatches, so critics that differ only in
    their activation start from the same weights and see the same data.
    """
    torch.manual_seed(seed)
    critic = dense_critic(pair.dim, hidden=cfg.hidden, activation=activation, iters=cfg.iters)
    options = DualTrainingOptions(
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, decay="linear", patience=None
    )
    gen = torch.Generator().manual_seed(seed)
    fit = train_dual(critic, pair.sample_p, pair.sample_q, options, generator=gen)
    return critic, fit.history


@torch.no_grad()
def _values(critic: torch.nn.Module, x: torch.Tensor, batch: int = 8192) -> torch.Tensor:
    return torch.cat([critic(x[s : s + batch]).squeeze(1) for s in range(0, len(x), batch)])


def evaluate_critic(
    critic: torch.nn.Module, pair: Pair, cfg: Config, seed: int
) -> tuple[float, float, float, float]:
    """Dual value, its standard error, certified bound and mean gradient norm.

    Uses ``cfg.n_eval`` fresh points of each law (a generator independent of
    training); the gradient norm is averaged over ``cfg.n_grad`` points of ``P``.
    Returns ``(dual, stderr, lipschitz, grad_norm_mean)``; the dual and its standard
    error are for ``f`` as trained (divide them by ``lipschitz``).
    """
    lip = float(lipschitz_bound(critic, (pair.dim,)))
    gen = torch.Generator().manual_seed(seed + 10**6)
    x, y = pair.sample_p(cfg.n_eval, gen), pair.sample_q(cfg.n_eval, gen)
    with parametrize.cached():
        fx, fy = _values(critic, x).double(), _values(critic, y).double()
        dual = float(fx.mean() - fy.mean())
        stderr = math.sqrt(float(fx.var() / len(fx) + fy.var() / len(fy)))
        # on P only: Q can be a Dirac, where the optimal critic ||x|| has no gradient
        pts = x[: cfg.n_grad].clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(critic(pts).sum(), pts)
    return dual, stderr, lip, float(grad.norm(dim=1).mean()) / lip


def api_reference(pair: Pair, cfg: Config, seed: int) -> dict:
    """The public estimator on one finite sample of each law (``cfg.ref_n`` points).

    ``estimate_w1(target="both")``: the certified sample bracket, POT's exact W1 of
    those samples, and the population confidence bracket with the default critic
    ladder; then :func:`wassnet.w1.population_bracket` once per activation with only
    the dense critic of this run's widths, so the activations are compared through
    the API too (cross-fitted on the finite sample, not on fresh draws).
    """
    gen = torch.Generator().manual_seed(seed + 2 * 10**6)
    a = pair.sample_p(cfg.ref_n, gen).double().numpy()
    b = pair.sample_q(cfg.ref_n, gen).double().numpy()

    def options(**kwargs) -> PopulationOptions:
        return PopulationOptions(
            hidden=cfg.hidden,
            iters=cfg.iters,
            steps=cfg.steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            **kwargs,
        )

    res = estimate_w1(
        a, b, target="both", population=options(), exact="always", seed=seed, device="cpu"
    )
    sample, population = res.sample, res.population
    by_activation = {}
    for activation in ACTIVATIONS:
        dense = options(critics=("dense",), activation=activation)
        by_activation[activation] = population_bracket(
            a, b, sample.upper, dense, seed=seed, device="cpu"
        ).estimate
    return {
        "n": cfg.ref_n,
        "lower": sample.lower,
        "upper": sample.upper,
        "estimate": sample.estimate,
        "exact_sample_w1": sample.exact,
        "route": sample.route,
        "lower_method": sample.lower_method,
        "upper_method": sample.upper_method,
        "population": {
            "lower": population.lower,
            "upper": population.upper,
            "estimate": population.estimate,
            "critics": sorted({f.critic for f in population.folds}),
        },
        "population_dense_by_activation": by_activation,
        "timings": dict(res.timings),
    }


def run(cfg: Config, log: Callable[[str], None] = print) -> list[PairResult]:
    """Train and evaluate every activation on every pair."""
    results: list[PairResult] = []
    for k, pair in enumerate(make_pairs(cfg.dims)):
        seed = cfg.seed * 1000 + k
        t0 = time.perf_counter()
        reference = api_reference(pair, cfg, seed)
        out = PairResult(pair.name, pair.dim, pair.truth, pair.description, reference)
        log(
            f"{pair.name:<13} d={pair.dim:<3} truth {pair.truth:.4f}  "
            f"sample W1 (n={cfg.ref_n}) {_fmt(reference['exact_sample_w1'])} "
            f"[{time.perf_counter() - t0:.1f}s]"
        )
        for activation in ACTIVATIONS:
            t0 = time.perf_counter()
            critic, history = train_critic(pair, activation, cfg, seed)
            train_s = time.perf_counter() - t0
            dual, stderr, lip, grad = evaluate_critic(critic, pair, cfg, seed)
            tail = history[-max(1, len(history) // 10) :]
            out.critics[activation] = CriticResult(
                activation=activation,
                dual=dual,
                lipschitz=lip,
                estimate=dual / lip,
                stderr=stderr / lip,
                ratio=dual / lip / pair.truth,
                grad_norm_mean=grad,
                train_dual_last=float(np.mean(tail)),
                train_s=train_s,
            )
            log(
                f"  {activation:<9} estimate {dual / lip:.4f} ± {stderr / lip:.4f}  "
                f"ratio {dual / lip / pair.truth:6.1%}  mean|grad f| {grad:.3f}  "
                f"L {lip:.6f}  [{train_s:.1f}s]"
            )
        results.append(out)
    return results


# --- reporting ----------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(results: Sequence[PairResult]) -> str:
    """One row per pair: truth, the sample reference, and estimate (ratio) per activation."""
    head = ["pair", "d", "W1 (truth)", "sample W1 (exact, n)", "estimate_w1 bracket"]
    head += ["population bracket (estimate, critics)"]
    head += [f"{a}: fresh-sample estimate (ratio); via the API" for a in ACTIVATIONS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        ref = r.reference
        row = [
            r.name,
            str(r.dim),
            f"{r.truth:.4f}",
            f"{_fmt(ref['exact_sample_w1'])} (n={ref['n']})",
            f"[{ref['lower']:.3f}, {ref['upper']:.3f}]",
        ]
        pop = ref["population"]
        row.append(
            f"[{pop['lower']:.3f}, {pop['upper']:.3f}] ({pop['estimate']:.3f}, "
            f"{', '.join(pop['critics'])})"
        )
        for a in ACTIVATIONS:
            c = r.critics[a]
            api = ref["population_dense_by_activation"][a]
            row.append(f"{c.estimate:.3f} ({c.ratio:.1%}); {api:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    grads = ", ".join(
        f"{a} {np.mean([r.critics[a].grad_norm_mean for r in results]):.3f}" for a in ACTIVATIONS
    )
    lines.append(f"Mean gradient norm of the normalized critic f/L on fresh points of P: {grads}.")
    return "\n".join(lines) + "\n"


def plot(results: Sequence[PairResult], path: Path) -> None:
    """Bars of estimate / truth per pair and activation (1 = the exact W1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.name}\nd={r.dim}" for r in results]
    x = np.arange(len(results))
    width = 0.8 / len(ACTIVATIONS)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(results)), 4.2))
    for i, a in enumerate(ACTIVATIONS):
        ratios = [r.critics[a].ratio for r in results]
        errs = [1.96 * r.critics[a].stderr / r.truth for r in results]
        ax.bar(x + (i - (len(ACTIVATIONS) - 1) / 2) * width, ratios, width, yerr=errs, label=a)
    ax.axhline(1.0, color="k", lw=1, ls="--", label="exact W1")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("dual estimate / exact W1")
    ax.set_ylim(0, 1.25)
    ax.set_title("Björck critics: GroupSort (MaxMin, FullSort) vs ReLU")
    ax.legend(loc="upper center", ncol=len(ACTIVATIONS) + 1, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(
    results: Sequence[PairResult], cfg: Config, out: Path, runtime_s: float, quick: bool
) -> str:
    """Write results.json, results.md and activations.png; return the markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results)
    payload = {
        "config": {**asdict(cfg), "activations": list(ACTIVATIONS), "quick": quick},
        "environment": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wassnet": wassnet.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": "cpu",
            "threads": torch.get_num_threads(),
        },
        "runtime_s": runtime_s,
        "pairs": [
            {
                **{k: v for k, v in asdict(r).items() if k != "critics"},
                "critics": {a: asdict(c) for a, c in r.critics.items()},
            }
            for r in results
        ],
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "results.md").write_text(table)
    plot(results, out / "activations.png")
    return table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="W1 estimation with Björck critics: GroupSort vs ReLU (Anil et al. 2019)."
    )
    parser.add_argument("--out", type=Path, default=Path("runs/anil_w1"), help="output folder")
    parser.add_argument("--steps", type=int, default=None, help="training steps per critic")
    parser.add_argument("--quick", action="store_true", help="tiny budget (smoke test, ~s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dims", type=str, default=None, help="comma-separated dimensions (default 2,16)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the layers are small, and several threads "
        "slow down badly when the cores are shared)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    cfg = QUICK if args.quick else Config()
    overrides: dict = {"seed": args.seed}
    if args.steps is not None:
        if args.steps < 1:
            print("error: --steps must be positive", file=sys.stderr)
            return 2
        overrides["steps"] = args.steps
    if args.dims:
        try:
            overrides["dims"] = tuple(int(s) for s in args.dims.split(","))
        except ValueError:
            print(f"error: --dims must be integers like 2,16, got {args.dims!r}", file=sys.stderr)
            return 2
        if any(d < 1 for d in overrides["dims"]):
            print("error: --dims must be positive", file=sys.stderr)
            return 2
    cfg = Config(**{**asdict(cfg), **overrides})
    torch.set_num_threads(max(1, args.threads))
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    results = run(cfg)
    runtime = time.perf_counter() - start
    table = write_outputs(results, cfg, args.out, runtime, args.quick)
    print()
    print(table)
    print(f"wrote {args.out}/results.json, results.md, activations.png ({runtime:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
