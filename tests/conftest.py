"""Shared helpers: exact reference computations that do not use wassnet's own code."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


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
