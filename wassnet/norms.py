"""The one table of the lp norms wassnet certifies, and the one place their names are read.

A norm has four spellings, each used somewhere:

==============  =======  ========  =========  ============================================
``metric``      ``p``    ``name``  ``cli``    where
==============  =======  ========  =========  ============================================
``euclidean``   2        ``l2``    ``"2"``    ground costs of W1 (``--metric``, as SciPy's
``cityblock``   1        ``l1``    ``"1"``    ``cdist``); ``p`` of Lipschitz bounds; the
``chebyshev``   inf      ``linf``  ``"inf"``  name in certificates; ``--norm`` and configs
==============  =======  ========  =========  ============================================

A user's spelling is resolved once, at the boundary, into a frozen :class:`Norm`
(:func:`by_metric`, :func:`by_p`, or :func:`resolve` for any spelling); code below takes
the :class:`Norm` and asks it (``norm.is_euclidean``, ``norm.p``, ``norm.dual``) instead
of comparing names. Every resolver returns a :class:`Norm` given one unchanged, so a
value resolved at the boundary passes through the layers below at the cost of one
``isinstance``. Only this module compares metric names. Torch-free.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from wassnet.errors import InputError

__all__ = [
    "CLI_KEYS",
    "L1",
    "L2",
    "LINF",
    "METRICS",
    "NORMS",
    "TABLE",
    "Norm",
    "by_metric",
    "by_p",
    "resolve",
]


@dataclass(frozen=True)
class Norm:
    """One lp norm (``p`` in 1, 2, inf) under all its names.

    ``metric``: the ground cost it measures (``euclidean``, ``cityblock``,
    ``chebyshev``, as in SciPy's ``cdist``); ``p``: a float (``math.inf`` for l-inf);
    ``name``: ``l2``, ``l1`` or ``linf`` (certificates, messages); ``cli``: ``"2"``,
    ``"1"`` or ``"inf"``, the value of ``--norm`` and of saved configs (JSON has no
    infinity); ``label``: ``L2``, ``L1`` or ``L-inf`` (printed summaries).

    Instances are the three constants :data:`L2`, :data:`L1`, :data:`LINF`; compare them
    with ``==`` or ``is``.
    """

    metric: str
    p: float
    name: str
    cli: str
    label: str

    @property
    def is_euclidean(self) -> bool:
        """Whether this is l2 (the cost with squares and a square root)."""
        return self.p == 2.0

    @property
    def is_cityblock(self) -> bool:
        """Whether this is l1 (the cost that is a sum)."""
        return self.p == 1.0

    @property
    def is_chebyshev(self) -> bool:
        """Whether this is l-inf (the cost that is a maximum)."""
        return self.p == math.inf

    @property
    def dual(self) -> Norm:
        """The dual norm: ``|<e, d>| <= dual(e) * self(d)`` (l2 <-> l2, l1 <-> l-inf)."""
        return _BY_P[{1.0: math.inf, 2.0: 2.0, math.inf: 1.0}[self.p]]

    def __str__(self) -> str:
        return self.name


L2 = Norm("euclidean", 2.0, "l2", "2", "L2")
L1 = Norm("cityblock", 1.0, "l1", "1", "L1")
LINF = Norm("chebyshev", math.inf, "linf", "inf", "L-inf")

#: The three norms, in the order of :data:`METRICS`.
TABLE: tuple[Norm, ...] = (L2, L1, LINF)
_BY_METRIC = {n.metric: n for n in TABLE}
_BY_P = {n.p: n for n in TABLE}
# every string spelling of p: the CLI keys and the norm names
_BY_P_TEXT = {**{n.cli: n for n in TABLE}, **{n.name: n for n in TABLE}}

#: Ground costs of W1 (``--metric``), in the order help texts list them.
METRICS: tuple[str, ...] = tuple(n.metric for n in TABLE)
#: The ``p`` of the norms Lipschitz bounds are certified in, ascending.
NORMS: tuple[float, ...] = tuple(sorted(_BY_P))
#: The values of ``--norm``, in the order ``--help`` lists them (the default first).
CLI_KEYS: tuple[str, ...] = ("2", "inf", "1")


def by_metric(metric: str | Norm) -> Norm:
    """The :class:`Norm` of a ground-cost name (``euclidean``, ``cityblock``,
    ``chebyshev``), or ``metric`` itself if it is a :class:`Norm`.

    Raises:
        InputError: any other value, naming the three metrics.
    """
    if isinstance(metric, Norm):
        return metric
    found = _BY_METRIC.get(metric) if isinstance(metric, str) else None
    if found is None:
        raise InputError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return found


def by_p(p: float | int | str | Norm) -> Norm:
    """The :class:`Norm` of ``p``: ``1``, ``2``, ``math.inf`` (ints or floats), their
    strings ``"1"``, ``"2"``, ``"inf"``, or the names ``"l1"``, ``"l2"``, ``"linf"``
    (case and surrounding spaces ignored); a :class:`Norm` is returned as is.

    Raises:
        InputError: any other value (``bool`` included), with ``p must be 1, 2 or inf``.
    """
    if isinstance(p, Norm):
        return p
    if isinstance(p, str):
        found = _BY_P_TEXT.get(p.strip().lower())
    elif isinstance(p, numbers.Real) and not isinstance(p, bool):  # numpy scalars too
        found = _BY_P.get(float(p))
    else:
        found = None
    if found is None:
        raise InputError(f"p must be 1, 2 or inf, got {p!r}")
    return found


def resolve(value: float | int | str | Norm) -> Norm:
    """The :class:`Norm` of any spelling: a metric name (:func:`by_metric`), a ``p``, a
    CLI key or a norm name (:func:`by_p`), or a :class:`Norm`.

    Raises:
        InputError: a value that is none of these, listing every accepted spelling.
    """
    if isinstance(value, str) and value in _BY_METRIC:
        return _BY_METRIC[value]
    try:
        return by_p(value)
    except InputError:
        accepted = [*METRICS, *(n.name for n in TABLE), *CLI_KEYS]
        raise InputError(
            f"a norm must be one of {', '.join(accepted)} (or p = 1, 2, inf), got {value!r}"
        ) from None
