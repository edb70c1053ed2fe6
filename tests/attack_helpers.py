"""Test helpers around :mod:`wassnet.certify.attack` (moved out of the library: only the
tests call them)."""

from __future__ import annotations

import torch
from torch import nn

from wassnet.certify import pgd


def pgd_l2(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, **options
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`wassnet.certify.pgd` in l2 (the name of wassnet 0.1)."""
    return pgd(model, x, y, eps, **options, p=2)
