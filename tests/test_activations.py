import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wassnet.nn import FullSort, GroupSort, MaxMin


@pytest.mark.parametrize("shape", [(5, 12), (3, 12, 4, 5)])
@pytest.mark.parametrize("group_size", [1, 2, 3, 4, 12])
def test_groupsort_sorts_each_group_and_permutes(shape, group_size):
    x = torch.randn(shape)
    y = GroupSort(group_size)(x)
    assert y.shape == x.shape
    groups_in = x.unflatten(1, (12 // group_size, group_size))
    groups_out = y.unflatten(1, (12 // group_size, group_size))
    torch.testing.assert_close(groups_out, groups_in.sort(dim=2, descending=True).values)


def test_maxmin_and_fullsort_are_groupsort():
    x = torch.randn(7, 10, 3, 3)
    torch.testing.assert_close(MaxMin()(x), GroupSort(2)(x))
    torch.testing.assert_close(FullSort()(x), GroupSort(10)(x))
    torch.testing.assert_close(FullSort()(x), x.sort(dim=1, descending=True).values)


def test_groupsort_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="not divisible"):
        GroupSort(4)(torch.randn(2, 6))
    with pytest.raises(ValueError, match="positive integer"):
        GroupSort(0)


@settings(max_examples=30, deadline=None)
@given(
    group_size=st.sampled_from([2, 3, 4]),
    groups=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    module=st.sampled_from(["groupsort", "fullsort"]),
)
def test_gradient_norm_is_preserved(group_size, groups, seed, module):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, group_size * groups, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, group_size * groups, generator=gen, dtype=torch.float64)
    act = GroupSort(group_size) if module == "groupsort" else FullSort()
    (g,) = torch.autograd.grad(act(x), x, grad_outputs=v)
    torch.testing.assert_close(g.norm(dim=1), v.norm(dim=1))
    # 1-Lipschitz: distances never grow
    y = torch.randn_like(x)
    assert (act(x) - act(y)).norm() <= (x - y).norm() + 1e-12
