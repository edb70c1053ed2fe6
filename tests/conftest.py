"""Shared helpers: exact reference computations that do not use wassnet's own code."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

#: Property tests run ``n * WASSNET_HYPOTHESIS_SCALE`` examples (1 in CI; raise it for a
#: longer hunt, e.g. ``WASSNET_HYPOTHESIS_SCALE=20 pytest tests/test_certificates.py``).
HYPOTHESIS_SCALE = int(os.environ.get("WASSNET_HYPOTHESIS_SCALE", "1"))


def examples(n: int) -> int:
    """The number of hypothesis examples for a test that runs ``n`` in CI."""
    return n * HYPOTHESIS_SCALE


#: Offline datasets beside the checkout (read-only: tests copy what they need).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable data root holding a copy of the offline MNIST raw files."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip("no offline MNIST files beside the checkout")
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(SHARED_DATA / "MNIST", root / "MNIST")
    return root


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def operator_matrix(fn: Callable[[torch.Tensor], torch.Tensor], input_shape) -> torch.Tensor:
    """The matrix of a linear map, by applying it to every basis vector (float64)."""
    n = 1
    for s in input_shape:
        n *= s
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *input_shape)
    with torch.no_grad():
        return fn(basis).reshape(n, -1).T


def exact_norm(fn: Callable[[torch.Tensor], torch.Tensor], input_shape) -> float:
    """Exact operator norm of a linear map: largest singular value of its matrix."""
    return float(torch.linalg.svdvals(operator_matrix(fn, input_shape))[0])


def exact_cost(x, y):
    """Euclidean costs by direct differences (no ``|x|^2 + |y|^2 - 2xy`` cancellation)."""
    import numpy as np

    return np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))


def pot_solve(x, y, wa=None, wb=None):
    """POT's exact W1 and its dual potentials (POT convention: u_i + v_j <= c_ij).

    Weights default to uniform and are normalized; the solver's result code is checked.
    """
    import numpy as np
    import ot

    n, m = len(x), len(y)
    wa = np.full(n, 1.0 / n) if wa is None else np.asarray(wa) / np.sum(wa)
    wb = np.full(m, 1.0 / m) if wb is None else np.asarray(wb) / np.sum(wb)
    value, log = ot.emd2(wa, wb, exact_cost(x, y), numItermax=10**7, log=True)
    assert log["result_code"] == 1
    return float(value), log["u"], log["v"]


def pot_w1(x, y, wa=None, wb=None) -> float:
    """POT's exact W1 (reference, independent of wassnet)."""
    return pot_solve(x, y, wa, wb)[0]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny problems: one intra-op thread is faster than two contending ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
