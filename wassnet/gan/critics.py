"""The WGAN critic: any :data:`wassnet.names.ARCHS` architecture, constrained or not.

==============  ===========================================  ==========================
``constraint``  network                                      Lipschitz control
==============  ===========================================  ==========================
``orthogonal``  Björck dense / BCOP conv layers + GroupSort  by construction
``projection``  plain layers + GroupSort                     projection after each step
``none``        plain ``nn.Linear`` / ``nn.Conv2d`` + ReLU   gradient penalty
==============  ===========================================  ==========================

Orthogonal critics are 1-Lipschitz for any weights (up to rounding); the trainer still
certifies them from their weights at every log step. The unconstrained critics are the
WGAN-GP baseline: their Lipschitz constant is whatever training makes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from wassnet.critics import make_critic
from wassnet.errors import InputError
from wassnet.names import ARCHS

__all__ = ["build_critic"]


def build_critic(
    arch: str,
    data_shape: Sequence[int],
    *,
    constraint: str = "orthogonal",
    width: int | None = None,
    iters: int = 10,
) -> nn.Sequential:
    """The critic ``arch`` for inputs of ``data_shape`` (one output).

    ``width`` replaces every hidden dense width of the preset (``None``: the preset's);
    ``iters`` sets the Björck / BCOP iterations of the orthogonal layers (fewer is
    faster; an under-converged layer has singular values below 1, never above, and the
    certified bound shows it).
    """
    shape = tuple(int(s) for s in data_shape)
    if arch in ARCHS and ARCHS[arch].kind == "conv" and len(shape) != 3:
        raise InputError(f"arch {arch!r} needs image data (C, H, W), got data of shape {shape}")
    if width is not None and (width < 2 or width % 2):
        raise InputError(f"critic width must be an even number >= 2, got {width}")
    if iters < 1:
        raise InputError(f"iters must be >= 1, got {iters}")
    return make_critic(arch, shape, constraint=constraint, width=width, iters=iters)
