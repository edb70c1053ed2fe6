"""The one factory: every job builds its network by :func:`make_critic`.

* :data:`PRESETS`: the architectures of :data:`wassnet.names.ARCHS` as builder keyword
  arguments (``"dense"``, ``"conv-small"``, ``"conv-large"``, ``"aol-small"``,
  ``"cpl-small"``, ``"sll-small"``, ``"linf-dist"``, ...);
* :func:`make_critic`: a preset, with a constraint and keyword overrides. The WGAN
  critic (:func:`wassnet.gan.build_critic`), the certified classifier
  (:mod:`wassnet.certify.model`) and the population bracket's ``dense`` and ``conv``
  families (:mod:`wassnet.w1.critic_fit`) are all built here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from wassnet.critics.builders import conv_critic, dense_critic, family_critic, linf_dist_critic
from wassnet.errors import InputError
from wassnet.names import ARCHS, CONSTRAINTS, ArchSpec

__all__ = ["PRESETS", "make_critic"]


def _preset(spec: ArchSpec) -> dict:
    if spec.family == "linf-dist":
        return {"builder": linf_dist_critic, "hidden": spec.hidden}
    if spec.family is not None:
        return {
            "builder": family_critic,
            "family": spec.family,
            "channels": spec.channels,
            "hidden": spec.hidden,
        }
    if spec.kind == "dense":
        return {"builder": dense_critic, "hidden": spec.hidden}
    return {"builder": conv_critic, "channels": spec.channels, "hidden": spec.hidden}


#: :data:`wassnet.names.ARCHS` as builder keyword arguments (one source of truth).
PRESETS: dict[str, dict] = {name: _preset(spec) for name, spec in ARCHS.items()}


def _check(arch: str, constraint: str, builder: Callable[..., Any], options: dict) -> None:
    """Refuse an unknown preset or constraint, and a constraint the preset cannot take."""
    if constraint not in CONSTRAINTS:
        raise InputError(
            f"unknown constraint {constraint!r}: choose one of {', '.join(CONSTRAINTS)}"
        )
    if constraint == "orthogonal":
        return
    if builder is linf_dist_critic:
        raise InputError(
            f"arch {arch!r} is built from l-inf-distance neurons, 1-Lipschitz in l-inf by "
            f"construction: it takes constraint 'orthogonal' (the default), not {constraint!r}"
        )
    if builder is family_critic:
        raise InputError(
            f"arch {arch!r} is built from {options['family'].upper()} layers, 1-Lipschitz by "
            f"construction: it takes constraint 'orthogonal' (the default), not {constraint!r}"
        )


def make_critic(
    arch: str,
    input_shape: int | Sequence[int],
    out_features: int = 1,
    *,
    constraint: str = "orthogonal",
    width: int | None = None,
    **overrides,
) -> nn.Sequential:
    """Build the architecture ``arch`` (see :data:`wassnet.names.ARCHS`).

    Args:
        constraint: ``"orthogonal"`` (Björck / BCOP layers with GroupSort, or the AOL /
            CPL / SLL layers of a family preset: 1-Lipschitz by construction; the only
            constraint a family preset takes), ``"projection"`` (plain ``nn.Linear`` /
            ``nn.Conv2d`` with zero padding and GroupSort, to be kept Lipschitz by
            :func:`wassnet.critics.setup_projected_training` (projection after every
            optimizer step): the returned network is not constrained until then) or
            ``"none"`` (plain layers with zero padding and ReLU, same shapes: the
            unconstrained WGAN-GP baseline).
        width: if given, every hidden dense width of the preset becomes ``width``.
        overrides: keyword arguments for the builder (``iters``, ``activation``,
            ``group_size``, ``hidden``, ``padding_mode``, ...); they win over the
            preset's and the constraint's choices.

    Example: ``make_critic("conv-small", (1, 28, 28), out_features=10)``.
    """
    if arch not in PRESETS:
        raise InputError(f"unknown architecture {arch!r}: choose one of {', '.join(PRESETS)}")
    options = dict(PRESETS[arch])
    builder = options.pop("builder")
    _check(arch, constraint, builder, options)
    if width is not None:
        options["hidden"] = (width,) * len(options["hidden"])
    if builder is linf_dist_critic:
        overrides.pop("iters", None)  # no Björck layers
    if constraint in ("none", "projection"):
        activation = "relu" if constraint == "none" else "groupsort"
        options.update(activation=activation, constraint="none")
        if builder is conv_critic:
            options["padding_mode"] = "zeros"
        overrides.pop("iters", None)  # plain layers have no iterations
    options.update(overrides)
    return builder(input_shape, out_features=out_features, **options)
