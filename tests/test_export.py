import io

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from wassnet import make_critic
from wassnet.nn import BCOPConv2d, BjorckLinear, export, lipschitz_bound

CASES = [
    ("dense", lambda: make_critic("dense-small", (12,), hidden=(32, 32), out_features=2), (12,)),
    ("conv-circular", lambda: make_critic("conv-small", (1, 12, 12), out_features=10), (1, 12, 12)),
    (
        "conv-zeros-even-kernel",
        lambda: make_critic(
            "conv-small",
            (3, 8, 8),
            channels=((6, 4, 1), (8, 2, 2), (8, 5, 1)),
            hidden=(16,),
            padding_mode="zeros",
        ),
        (3, 8, 8),
    ),
]


def _is_plain(model: nn.Module) -> bool:
    return not any(parametrize.is_parametrized(m) for m in model.modules()) and not any(
        isinstance(m, (BjorckLinear, BCOPConv2d)) for m in model.modules()
    )


@pytest.mark.parametrize("name, build, shape", CASES, ids=[c[0] for c in CASES])
def test_export_same_function_same_certificate(name, build, shape):
    model = build()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, *shape)).sum().backward()
    opt.step()  # export trained weights, not the initialization
    exported = export(model)
    assert _is_plain(exported)
    x = torch.randn(32, *shape)
    with torch.no_grad():
        assert (exported(x) - model(x)).abs().max() <= 1e-5
    assert lipschitz_bound(exported, shape).bound == lipschitz_bound(model, shape).bound
    # the original is untouched and still trainable
    assert any(parametrize.is_parametrized(m) for m in model.modules())
    model(x).sum().backward()


@pytest.mark.parametrize("name, build, shape", CASES, ids=[c[0] for c in CASES])
def test_exported_model_saves_loads_and_scripts(name, build, shape):
    model = build().eval()
    exported = export(model)
    assert not exported.training
    x = torch.randn(8, *shape)
    with torch.no_grad():
        expected = exported(x)
        # state_dict round trip into a fresh export
        fresh = export(build())
        fresh.load_state_dict(exported.state_dict())
        torch.testing.assert_close(fresh(x), expected)
        # whole-module pickle
        buffer = io.BytesIO()
        torch.save(exported, buffer)
        buffer.seek(0)
        torch.testing.assert_close(torch.load(buffer, weights_only=False)(x), expected)
        # TorchScript: loadable without Python class definitions
        scripted = torch.jit.script(exported)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        torch.testing.assert_close(torch.jit.load(buffer)(x), expected)
    # torch.export, the successor of TorchScript
    program = torch.export.export(exported, (x,))
    torch.testing.assert_close(program.module()(x), expected)


def test_export_refuses_unknown_parametrized_modules():
    class Scale(nn.Module):
        def forward(self, w):
            return 2 * w

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

    custom = Custom()
    parametrize.register_parametrization(custom, "w", Scale())
    with pytest.raises(TypeError, match="cannot export"):
        export(custom)
