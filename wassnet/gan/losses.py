r"""Wasserstein GAN losses (Arjovsky et al. 2017) and the WGAN-GP penalty (Gulrajani et al. 2017).

The critic ``f`` maximizes the Kantorovich–Rubinstein objective
:math:`\mathbb{E}_{P} f(x) - \mathbb{E}_{G} f(\tilde x)`; the generator minimizes
:math:`-\mathbb{E} f(G(z))`. When ``f`` is 1-Lipschitz by construction (GroupSort +
Björck / BCOP critics), the critic's objective is a lower bound on
:math:`W_1(P, G_\#\mu)` for the minibatch measures and no penalty is needed. An
unconstrained ReLU critic needs :func:`gradient_penalty` instead, which only
*encourages* unit gradient norm on interpolates and certifies nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from wassnet.errors import InputError

__all__ = ["critic_objective", "generator_loss", "gradient_penalty"]


def critic_objective(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    """``mean f(real) - mean f(fake)``: the critic's W1 estimate (to be maximized)."""
    return f_real.mean() - f_fake.mean()


def generator_loss(f_fake: torch.Tensor) -> torch.Tensor:
    """``-mean f(G(z))`` (to be minimized by the generator)."""
    return -f_fake.mean()


def gradient_penalty(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, epsilon: torch.Tensor
) -> torch.Tensor:
    r"""WGAN-GP two-sided penalty :math:`\mathbb{E}(\|\nabla_{\hat x} f(\hat x)\|_2 - 1)^2`.

    Evaluated at :math:`\hat x = \epsilon x + (1 - \epsilon) \tilde x`, with one
    ``epsilon`` in ``[0, 1]`` per sample (shape ``[batch]``, drawn by the caller from its
    own generator so that runs are resumable). Differentiable in the critic's
    parameters (``create_graph=True``).
    """
    if real.shape != fake.shape:
        raise InputError(f"real and fake batches differ in shape: {real.shape} vs {fake.shape}")
    eps = epsilon.reshape(-1, *([1] * (real.dim() - 1))).to(real)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = critic(mixed)
    (grad,) = torch.autograd.grad(out.sum(), mixed, create_graph=True)
    norms = grad.flatten(1).norm(dim=1)
    return ((norms - 1) ** 2).mean()
