r"""``estimate_w1``: W1 between two samples, and between the distributions they come from.

Two questions, answered separately and labelled so that nobody confuses them:

* **sample** -- W1 between the two given point clouds, a finite LP. Answered with a
  certified bracket (:mod:`wassnet.w1.sample`): ``lower <= W1 <= upper`` holds exactly.
* **population** -- W1 between the distributions the samples were drawn from. The
  sample value overstates it (in high dimension by far); the ``floor`` (W1 between two
  halves of A) shows by how much sampling alone moves W1.

Stages of :func:`estimate_w1`: validate the inputs, build the exact problem, the
sample bracket, the floor, the optional POT reference.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from wassnet.ot import TransportProblem, exact_w1, exact_w1_fits
from wassnet.runtime import resolve_device
from wassnet.w1.io import check_same_dimension, validate_points, validate_weights
from wassnet.w1.options import SampleOptions, Target
from wassnet.w1.result import SampleBracket, W1Result
from wassnet.w1.sample import sample_bracket

__all__ = ["METRICS", "estimate_w1"]

#: Ground costs: ``euclidean`` (|x - y|_2).
METRICS: tuple[str, ...] = ("euclidean",)
ExactMode = Literal["auto", "always", "never"]
_TARGETS = ("sample", "population", "both")


def _validated(
    a: Any, b: Any, weights_a: Any, weights_b: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    xa, xb = validate_points(a, "A"), validate_points(b, "B")
    check_same_dimension(xa, xb)
    wa = None if weights_a is None else validate_weights(weights_a, len(xa), "weights A")
    wb = None if weights_b is None else validate_weights(weights_b, len(xb), "weights B")
    return xa, xb, wa, wb


def _floor_bracket(
    x: np.ndarray, w: np.ndarray | None, options: SampleOptions, device: torch.device, seed: int
) -> SampleBracket:
    """W1 between two disjoint random halves of one cloud (the sampling floor)."""
    n = len(x)
    if n < 2:
        raise ValueError("the floor needs at least 2 points in A")
    perm = np.random.default_rng([seed, 1]).permutation(n)
    half = n // 2
    first, second = np.sort(perm[:half]), np.sort(perm[half : 2 * half])
    wf = None if w is None else w[first]
    ws = None if w is None else w[second]
    if wf is not None and not (wf.max() > 0 and ws.max() > 0):
        raise ValueError("the floor needs positive weight in both halves of A")
    problem = TransportProblem.build(x[first], x[second], wf, ws)
    return sample_bracket(problem, options, device=device, seed=seed)


def _reference(
    xa: np.ndarray,
    xb: np.ndarray,
    wa: np.ndarray | None,
    wb: np.ndarray | None,
    exact: ExactMode,
    options: SampleOptions,
) -> float | None:
    """POT's exact W1 (a float64 reference) when asked for and it fits."""
    n, m = len(xa), len(xb)
    small = n * m <= options.dense_max_pairs and exact_w1_fits(n, m)
    if exact == "never" or (exact == "auto" and not small):
        return None
    return exact_w1(np.asarray(xa), np.asarray(xb), wa, wb)


def estimate_w1(
    a: np.ndarray | torch.Tensor | Sequence,
    b: np.ndarray | torch.Tensor | Sequence,
    weights_a: np.ndarray | Sequence[float] | None = None,
    weights_b: np.ndarray | Sequence[float] | None = None,
    *,
    target: Target = "sample",
    metric: str = "euclidean",
    sample: SampleOptions | None = None,
    exact: ExactMode = "never",
    floor: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> W1Result:
    """W1 between two point clouds (Euclidean ground cost).

    Args:
        a, b: ``[n, d]`` and ``[m, d]`` points (``n != m`` allowed), or 1-D arrays of
            points on the line; arrays with more dimensions are flattened per point.
        weights_a, weights_b: optional nonnegative sample weights (any positive sum;
            the marginals are ``w / sum(w)`` exactly).
        target: ``"sample"``: W1 between the two given samples, certified.
        metric: the ground cost; ``"euclidean"``.
        sample: options of the sample bracket (:class:`SampleOptions`).
        exact: also compute POT's exact W1 as a reference: ``"auto"`` when the dense
            matrix is small, ``"always"``, or ``"never"``.
        floor: also bracket W1 between two disjoint random halves of A (the sampling
            floor), with the same options.
        seed: picks the warm start's subsample and the floor's halves.
        device: where the passes over all pairs run (default: a GPU when present).
        progress: show progress bars.

    Returns:
        A :class:`W1Result`; ``result.sample.lower <= W1(a, b) <= result.sample.upper``
        holds exactly for the input as given.

    Raises:
        wassnet.errors.InputError: empty, non-finite, mismatched inputs, or values
            that float64 cannot hold exactly.
        ValueError: bad options.
    """
    if target not in _TARGETS:
        raise ValueError(f"target must be sample, population or both, got {target!r}")
    if target != "sample":
        raise ValueError(
            "target='population' is not available in this version: use target='sample'"
        )
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if exact not in ("auto", "always", "never"):
        raise ValueError(f"exact must be auto, always or never, got {exact!r}")
    options = SampleOptions() if sample is None else sample
    if not isinstance(options, SampleOptions):
        raise ValueError(f"sample must be a SampleOptions, got {type(options).__name__}")
    timings: dict[str, float] = {}
    xa, xb, wa, wb = _validated(a, b, weights_a, weights_b)
    dev = resolve_device(device)
    problem = TransportProblem.build(xa, xb, wa, wb)

    result_sample = sample_bracket(problem, options, device=dev, seed=seed, progress=progress)
    timings["sample"] = result_sample.seconds
    floor_result = None
    if floor:
        t0 = time.perf_counter()
        floor_result = _floor_bracket(xa, wa, options, dev, seed)
        timings["floor"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result_sample.exact = _reference(xa, xb, wa, wb, exact, options)
    if result_sample.exact is not None:
        timings["exact (POT)"] = time.perf_counter() - t0
    return W1Result(
        sample=result_sample,
        n_a=len(xa),
        n_b=len(xb),
        dim=problem.dim,
        target=target,
        metric=metric,
        floor=floor_result,
        seed=seed,
        device=str(dev),
        timings=timings,
    )
