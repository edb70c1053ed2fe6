"""The one way wassnet retires a name: it keeps working, warns, and says when it goes.

Every old spelling (a command-line option, a keyword of a library function, a field of a
saved config) goes through :func:`deprecated_alias`, which emits a
:class:`WassnetDeprecationWarning` naming the old and the new spelling and the version
that removes the old one. The warning is a :class:`FutureWarning` (Python shows those to
end users by default, unlike ``DeprecationWarning``). Torch-free.

* CLI options: :class:`wassnet.clitools.Renamed`;
* keyword arguments: :func:`renamed_keywords`;
* saved configs: :func:`renamed_keys`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from wassnet.errors import InputError

__all__ = [
    "REMOVED_IN",
    "WassnetDeprecationWarning",
    "deprecated_alias",
    "deprecation_message",
    "renamed_keys",
    "renamed_keywords",
]

#: The release that removes the spellings of wassnet 0.1 still accepted today.
REMOVED_IN = "0.4"

F = TypeVar("F", bound=Callable[..., Any])


class WassnetDeprecationWarning(FutureWarning):
    """An old spelling was used: it still works, until the version the message names."""


def deprecation_message(old: str, new: str, removed_in: str = REMOVED_IN) -> str:
    """``"<old> is deprecated (removed in wassnet <v>): use <new>"``."""
    return f"{old} is deprecated (removed in wassnet {removed_in}): use {new}"


def deprecated_alias(
    old: str, new: str, removed_in: str = REMOVED_IN, *, stacklevel: int = 2
) -> None:
    """Warn that ``old`` is the deprecated spelling of ``new``, removed in ``removed_in``.

    ``stacklevel`` as in :func:`warnings.warn` (2: the caller's caller is blamed).
    """
    warnings.warn(
        deprecation_message(old, new, removed_in),
        WassnetDeprecationWarning,
        stacklevel=stacklevel + 1,
    )


def renamed_keys(
    data: Mapping[str, Any], renames: Mapping[str, str], what: str, removed_in: str = REMOVED_IN
) -> dict[str, Any]:
    """``data`` with each old key of ``renames`` (old -> new) renamed, warning once per
    old key present (``what`` names the mapping, e.g. ``"GAN config field"``).

    Raises:
        InputError: an old key and its new one both present.
    """
    out = dict(data)
    for old, new in renames.items():
        if old not in out:
            continue
        if new in out:
            raise InputError(f"{what} {old!r} is the old spelling of {new!r}: give one of them")
        deprecated_alias(f"{what} {old!r}", repr(new), removed_in, stacklevel=3)
        out[new] = out.pop(old)
    return out


def renamed_keywords(removed_in: str = REMOVED_IN, **renames: str) -> Callable[[F], F]:
    """Decorate a function so that it also accepts old keyword names (``old="new"``),
    with a :class:`WassnetDeprecationWarning`; giving both is a ``TypeError`` as for any
    keyword given twice."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{fn.__name__}() got {old!r} and {new!r}: {old!r} is the old "
                            f"name of {new!r}, give one of them"
                        )
                    deprecated_alias(f"{fn.__name__}({old}=...)", f"{new}=", removed_in)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
