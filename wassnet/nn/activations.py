"""Gradient-norm-preserving activations (Anil, Lucas & Grosse, ICML 2019).

Sorting the entries of a vector only permutes them, so each activation here is
piecewise linear with a permutation matrix as its Jacobian almost everywhere:
it is 1-Lipschitz in the L2 norm and preserves the norm of every gradient
(``||J^T v|| = ||v||``). ReLU, by contrast, zeroes gradients and attenuates
them layer after layer.

All activations act along the channel dimension ``dim`` (1 by default), so the
same module serves dense features ``[N, C]`` and convolutional feature maps
``[N, C, H, W]``: for a feature map, the sort is done independently at each
spatial position.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from wassnet.errors import InputError

__all__ = ["FullSort", "GroupSort", "MaxMin", "NormPool", "Translate"]


class GroupSort(nn.Module):
    r"""Sort the channels within contiguous groups of ``group_size``.

    The ``C`` channels along ``dim`` are split into ``C / group_size``
    contiguous groups; each group is sorted in descending order. With
    ``group_size=2`` this is MaxMin, with ``group_size=C`` it is FullSort.

    Guarantees: the output is a permutation of the input, so the map is
    1-Lipschitz in L2 and gradient-norm preserving. ``C`` must be divisible by
    ``group_size`` (checked at call time, with a clear error).

    Args:
        group_size: size of each group, ``>= 1``. ``1`` is the identity.
        dim: the channel dimension.

    Shape:
        - Input: ``[N, C, *]``; Output: same shape.
    """

    def __init__(self, group_size: int = 2, dim: int = 1) -> None:
        super().__init__()
        if int(group_size) != group_size or group_size < 1:
            raise InputError(f"group_size must be a positive integer, got {group_size!r}")
        self.group_size = int(group_size)
        self.dim = int(dim)

    def _group(self, x: torch.Tensor) -> int:
        channels = x.shape[self.dim]
        if channels % self.group_size != 0:
            raise InputError(
                f"GroupSort: {channels} channels are not divisible by group_size {self.group_size}"
            )
        return self.group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self._group(x)
        if g == 1:
            return x
        dim = self.dim if self.dim >= 0 else x.dim() + self.dim
        grouped = x.unflatten(dim, (x.shape[dim] // g, g))
        if g == 2:
            first, second = grouped.unbind(dim + 1)
            out = torch.stack((torch.maximum(first, second), torch.minimum(first, second)), dim + 1)
        else:
            out = grouped.sort(dim=dim + 1, descending=True).values
        return out.flatten(dim, dim + 1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, dim={self.dim}"


class MaxMin(GroupSort):
    """GroupSort with groups of two: each pair ``(a, b)`` becomes ``(max, min)``."""

    #: a permutation of its input, like GroupSort: certified by GroupSort's rule
    lipschitz_inherits_rule = True

    def __init__(self, dim: int = 1) -> None:
        super().__init__(group_size=2, dim=dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class FullSort(GroupSort):
    """Sort all channels along ``dim`` in descending order (one group of size ``C``)."""

    #: a permutation of its input, like GroupSort: certified by GroupSort's rule
    lipschitz_inherits_rule = True

    def __init__(self, dim: int = 1) -> None:
        super().__init__(group_size=1, dim=dim)

    def _group(self, x: torch.Tensor) -> int:
        return int(x.shape[self.dim])

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class NormPool(nn.Module):
    r"""The lp norm (default l2) of each contiguous group of ``group_size`` channels.

    ``[N, C] -> [N, C / group_size]``: ``y_k = ||x_{group k}||_p``. Guarantees: 1-Lipschitz
    in lp (the reverse triangle inequality, group by group; in another norm the
    certified rule charges the norms' ratio on a group), and for ``p = 2``
    gradient-norm preserving away from zero (the Jacobian's rows ``x_g / ||x_g||`` are
    orthonormal). ``NormPool(C)`` after a translation is the distance to a point, the
    optimal critic between a law and its radial rescaling. ``C`` must be divisible by
    ``group_size``; ``p`` is 1, 2 or ``inf``.
    """

    def __init__(self, group_size: int, p: float = 2.0) -> None:
        super().__init__()
        if int(group_size) != group_size or group_size < 1:
            raise InputError(f"group_size must be a positive integer, got {group_size!r}")
        if p not in (1, 2, math.inf):
            raise InputError(f"NormPool: p must be 1, 2 or inf, got {p!r}")
        self.group_size = int(group_size)
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] % self.group_size:
            raise InputError(
                f"NormPool: input {tuple(x.shape)} is not [N, C] with C divisible by "
                f"{self.group_size}"
            )
        return torch.linalg.vector_norm(x.unflatten(1, (-1, self.group_size)), ord=self.p, dim=2)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}" + ("" if self.p == 2 else f", p={self.p:g}")


class Translate(nn.Module):
    """``x + b`` with a learned offset ``b`` (``[N, C]``): an isometry, Lipschitz 1 exactly."""

    def __init__(self, features: int) -> None:
        super().__init__()
        if int(features) != features or features < 1:
            raise InputError(f"features must be a positive integer, got {features!r}")
        self.offset = nn.Parameter(torch.zeros(int(features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset

    def extra_repr(self) -> str:
        return f"features={self.offset.numel()}"
