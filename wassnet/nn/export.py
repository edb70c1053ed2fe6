"""Export a wassnet network to plain torch layers with fixed weights.

The exported network computes the same function as the original at the moment of
export (Björck iterations and BCOP kernels are evaluated once and frozen), contains
no parametrization, and is made of ``nn.Linear`` / ``nn.Conv2d`` / ``nn.Sequential``
/ ``nn.PixelUnshuffle`` plus wassnet's parameter-free activations, so it can be
saved with ``torch.save`` or ``state_dict``, scripted with ``torch.jit.script`` and
certified again with :func:`wassnet.nn.lipschitz_bound` (same bound).

The original is never modified. (``parametrize.remove_parametrizations`` is not
used on a copy: a deep copy of a parametrized module shares its generated class
with the original, and removing the parametrization from one breaks the other.)
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from wassnet.errors import InputTypeError
from wassnet.nn.lipschitz import (
    LipschitzBoundError,
    check_faithful,
    is_plain_sequential,
    sequence_items,
)

__all__ = ["export"]


def _frozen(tensor: torch.Tensor | None) -> nn.Parameter | None:
    return None if tensor is None else nn.Parameter(tensor.detach().clone())


def _plain_layer(module: nn.Linear | nn.Conv2d) -> nn.Module:
    """The layer as an exact ``nn.Linear`` / ``nn.Conv2d`` holding its current weights."""
    has_bias = module.bias is not None
    if isinstance(module, nn.Linear):
        plain: nn.Module = nn.Linear(module.in_features, module.out_features, bias=has_bias)
    else:
        plain = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=has_bias,
            padding_mode=module.padding_mode,
        )
        # non-zero padding modes pad by this list, which the constructor sets once from
        # `padding`: copied as it is, so a padding changed later is exported as it runs
        plain._reversed_padding_repeated_twice = list(module._reversed_padding_repeated_twice)
    plain.weight = _frozen(module.weight)
    plain.bias = _frozen(module.bias)
    return plain


def _export(module: nn.Module, name: str = "") -> nn.Module:
    check_faithful(module, name)  # hooks, instance forwards, undeclared subclasses
    try:
        if callable(getattr(module, "export", None)):
            return module.export()
        if isinstance(module, (nn.Linear, nn.Conv2d)) and type(module) not in (
            nn.Linear,
            nn.Conv2d,
        ):
            return _plain_layer(module)  # declared subclasses and parametrized layers
    except (RuntimeError, ValueError) as exc:  # e.g. a geometry torch cannot rebuild
        text = " ".join(str(exc).split())[:300]
        raise LipschitzBoundError(f"cannot export {name or '<model>'}: {text}") from None
    if isinstance(module, nn.Sequential):
        if not is_plain_sequential(module):
            raise LipschitzBoundError(
                f"cannot export {name or '<model>'}: {type(module).__name__} overrides "
                "nn.Sequential's forward methods"
            )
        return nn.Sequential(  # every entry, repeats included, as the forward runs them
            *(
                _export(child, f"{name}.{key}" if name else key)
                for key, child in sequence_items(module, name)
            )
        )
    if parametrize.is_parametrized(module):
        raise InputTypeError(
            f"cannot export parametrized {type(module).__name__}: give it an export() method"
        )
    children = dict(module.named_children())
    shell = copy.copy(module)
    shell._modules = {}
    shell = copy.deepcopy(shell)
    for key, child in children.items():
        setattr(shell, key, _export(child, f"{name}.{key}" if name else key))
    return shell


@torch.no_grad()
def export(model: nn.Module) -> nn.Module:
    """Return a plain-torch copy of ``model`` computing the same function.

    Layers that define ``export()`` (such as :class:`wassnet.nn.BCOPConv2d`) are
    replaced by what it returns; Björck/BCOP weights are evaluated once and stored as
    ordinary parameters; the copy is in the same train/eval mode and on the same
    device as the original.

    Raises:
        LipschitzBoundError: a module whose function may differ from its type's (forward
            hooks, an instance-level forward, a subclass overriding a forward method
            without declaring ``lipschitz_inherits_rule``), which a plain layer would
            not reproduce (:func:`wassnet.nn.lipschitz.check_faithful`).
    """
    with parametrize.cached():
        exported = _export(model)
    return exported.train(model.training)
