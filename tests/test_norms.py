"""wassnet.norms: the one table of norms and its resolvers; the old tables agree with it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wassnet import names, norms
from wassnet.errors import InputError
from wassnet.norms import L1, L2, LINF, Norm, by_metric, by_p, resolve


def test_table_rows():
    assert Norm("euclidean", 2.0, "l2", "2", "L2") == L2
    assert Norm("cityblock", 1.0, "l1", "1", "L1") == L1
    assert Norm("chebyshev", math.inf, "linf", "inf", "L-inf") == LINF
    assert norms.METRICS == ("euclidean", "cityblock", "chebyshev")
    assert (1.0, 2.0, math.inf) == norms.NORMS
    assert set(norms.CLI_KEYS) == {n.cli for n in norms.TABLE}


@pytest.mark.parametrize("norm", norms.TABLE)
def test_every_spelling_resolves_to_the_same_object(norm):
    spellings = [norm.metric, norm.p, norm.name, norm.cli, norm.name.upper(), f" {norm.cli} "]
    for s in spellings:
        assert resolve(s) is norm
    assert by_metric(norm.metric) is norm
    assert by_p(norm.p) is by_p(norm.cli) is by_p(norm.name) is norm
    assert by_metric(norm) is by_p(norm) is resolve(norm) is norm
    assert str(norm) == norm.name


def test_int_and_numpy_p():
    assert by_p(2) is L2 and by_p(1) is L1 and by_p(float("inf")) is LINF
    assert by_p(np.int64(1)) is L1 and by_p(np.float64(2.0)) is L2


@pytest.mark.parametrize("bad", [3, 0.5, "l3", "", True, None, float("nan"), "euclidean"])
def test_by_p_refuses(bad):
    with pytest.raises(InputError, match="p must be 1, 2 or inf"):
        by_p(bad)


@pytest.mark.parametrize("bad", ["l2", "2", 2, "Euclidean", None])
def test_by_metric_refuses(bad):
    with pytest.raises(InputError, match="metric must be one of euclidean, cityblock, chebyshev"):
        by_metric(bad)


def test_resolve_refuses_with_every_spelling():
    with pytest.raises(
        InputError, match="euclidean, cityblock, chebyshev, l2, l1, linf, 2, inf, 1"
    ):
        resolve("manhattan")


def test_predicates_and_dual():
    assert [n.is_euclidean for n in norms.TABLE] == [True, False, False]
    assert [n.is_cityblock for n in norms.TABLE] == [False, True, False]
    assert [n.is_chebyshev for n in norms.TABLE] == [False, False, True]
    assert L2.dual is L2 and L1.dual is LINF and LINF.dual is L1


def test_frozen():
    with pytest.raises(AttributeError):
        L2.p = 1.0  # type: ignore[misc]


def test_old_tables_are_the_one_table():
    from wassnet.nn import lipschitz
    from wassnet.ot import metrics

    assert names.METRICS == metrics.METRICS == norms.METRICS
    assert names.NORM_METRIC == {"2": "euclidean", "1": "cityblock", "inf": "chebyshev"}
    assert lipschitz.NORMS == norms.NORMS
    for n in norms.TABLE:
        assert metrics.metric_p(n.metric) == n.p and metrics.check_metric(n) == n.metric
        assert lipschitz.norm_name(n.p) == n.name and lipschitz.norm_key(n.p) == n.cli
        assert lipschitz.norm_p(n.cli) == n.p
