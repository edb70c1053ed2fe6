"""The critics a WGAN can be trained with, by name, built with :mod:`wassnet.critics`.

===================  =============================================  ===================
name                 network                                        Lipschitz control
===================  =============================================  ===================
``groupsort-dense``  Björck dense layers + GroupSort (MaxMin)       by construction
``bcop-conv``        BCOP convolutions + GroupSort, Björck tail     by construction
``relu-dense``       plain ``nn.Linear`` + ReLU, same widths        gradient penalty
``relu-conv``        plain ``nn.Conv2d`` (zero padding) + ReLU      gradient penalty
===================  =============================================  ===================

The first two are 1-Lipschitz for any weights (up to rounding); the trainer still
certifies them from their weights at every log step. The ReLU critics are the WGAN-GP
baseline: their Lipschitz constant is whatever training makes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from wassnet.critics import conv_critic, dense_critic

__all__ = ["CRITICS", "LIPSCHITZ_CRITICS", "build_critic"]

#: Critic names accepted by the trainer.
CRITICS = ("groupsort-dense", "bcop-conv", "relu-dense", "relu-conv")
#: Those that are 1-Lipschitz by construction (no penalty needed).
LIPSCHITZ_CRITICS = ("groupsort-dense", "bcop-conv")

#: Convolutions of the convolutional critics: (out_channels, kernel, stride).
CONV_CHANNELS = ((16, 4, 2), (32, 4, 2))


def build_critic(
    name: str, data_shape: Sequence[int], width: int, bjorck_iters: int = 10
) -> nn.Sequential:
    """Build the critic ``name`` (see :data:`CRITICS`) for inputs of ``data_shape``.

    Dense critics have three hidden layers of ``width``; convolutional critics have
    two stride-2 convolutions (16 and 32 channels, kernel 4) and one dense hidden layer
    of ``width``. ``bjorck_iters`` sets the Björck / BCOP iterations of the constrained
    critics (fewer is faster; an under-converged layer has singular values below 1,
    never above, and the certified bound shows it).
    """
    shape = tuple(int(s) for s in data_shape)
    if name not in CRITICS:
        raise ValueError(f"unknown critic {name!r}: choose one of {', '.join(CRITICS)}")
    if width < 2 or width % 2:
        raise ValueError(f"critic width must be an even number >= 2, got {width}")
    if bjorck_iters < 1:
        raise ValueError(f"bjorck_iters must be >= 1, got {bjorck_iters}")
    if name.endswith("-conv") and len(shape) != 3:
        raise ValueError(f"critic {name!r} needs image data (C, H, W), got data of shape {shape}")
    hidden3 = (width, width, width)
    if name == "groupsort-dense":
        return dense_critic(shape, hidden3, activation="groupsort", iters=bjorck_iters)
    if name == "relu-dense":
        return dense_critic(shape, hidden3, activation="relu", constraint="none")
    if name == "bcop-conv":
        return conv_critic(shape, CONV_CHANNELS, (width,), iters=bjorck_iters)
    return conv_critic(
        shape,
        CONV_CHANNELS,
        (width,),
        activation="relu",
        constraint="none",
        padding_mode="zeros",
    )
