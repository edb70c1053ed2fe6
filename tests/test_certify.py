"""Certified-robust classification: losses, radii, accuracy, attack, export, resume."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from attack_helpers import pgd_l2
from torch import nn

from wassnet.certify import (
    AttackCheck,
    AttackOptions,
    Evaluation,
    LoadedClassifier,
    TrainConfig,
    attack_certified,
    certified_accuracy,
    certified_radius,
    cross_entropy_with_temperature,
    evaluate,
    export_classifier,
    load_classifier,
    make_classifier,
    multiclass_hinge,
    train_classifier,
)
from wassnet.checkpoint import CheckpointError
from wassnet.errors import InputError, RunFolderError, WassnetWarning
from wassnet.nn import lipschitz_bound

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n: int = 384, d: int = 8, k: int = 3, seed: int = 0):
    """``k`` Gaussian blobs in ``[0, 1]^d`` whose centers are 0.45 apart (learnable margins)."""
    gen = torch.Generator().manual_seed(seed)
    centers = 0.5 + 0.45 * torch.eye(k, d) * math.sqrt(2) / 2
    y = torch.arange(n) % k
    x = (centers[y] + 0.04 * torch.randn(n, d, generator=gen)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    x, y = blobs()
    config = TrainConfig(arch="dense-small", eps=0.3, epochs=4, batch_size=64, lr=3e-3, iters=5)
    out = tmp_path_factory.mktemp("blobs")
    result = train_classifier(config, out, data=(x, y), device="cpu", progress=False)
    return result, x, y


# --------------------------------------------------------------------------- losses


def test_hinge_is_multi_margin_loss_with_margin_sqrt2_eps():
    logits = torch.randn(32, 5, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (32,), generator=torch.Generator().manual_seed(2))
    ours = multiclass_hinge(logits, y, eps=0.7)
    ref = F.multi_margin_loss(logits, y, margin=math.sqrt(2) * 0.7)
    torch.testing.assert_close(ours, ref)
    # zero loss exactly when every rival trails by at least sqrt(2) * eps
    sure = torch.tensor([[2.0, 2.0 - math.sqrt(2) * 0.5 - 1e-6, 0.0]])
    assert float(multiclass_hinge(sure, torch.tensor([0]), eps=0.5)) == 0.0
    assert float(multiclass_hinge(sure, torch.tensor([0]), eps=0.6)) > 0.0


def test_cross_entropy_temperature():
    logits = torch.randn(8, 3)
    y = torch.randint(0, 3, (8,))
    torch.testing.assert_close(
        cross_entropy_with_temperature(logits, y, 0.1), F.cross_entropy(logits / 0.1, y)
    )
    with pytest.raises(ValueError, match="temperature"):
        cross_entropy_with_temperature(logits, y, 0.0)
    with pytest.raises(ValueError, match="eps"):
        multiclass_hinge(logits, y, eps=-1.0)
    with pytest.raises(ValueError, match="target"):
        multiclass_hinge(logits, y[:3])


# --------------------------------------------------------------------------- radius


def test_radius_formula_by_hand_with_lipschitz_not_one():
    model = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    x = torch.tensor([[1.0, 0.5], [0.1, 2.0]])
    # L = largest singular value = 3; logits (3, 0.5, 0) and (0.3, 2, 0)
    pred, radius = certified_radius(model, x, return_prediction=True)
    assert pred.tolist() == [0, 1]
    expected = torch.tensor([2.5, 1.7], dtype=torch.float64) / (math.sqrt(2) * 3.0)
    torch.testing.assert_close(radius, expected, rtol=1e-6, atol=0)
    # an explicit bound is used as given
    torch.testing.assert_close(certified_radius(model, x, lipschitz=1.0), expected * 3.0)
    with pytest.raises(ValueError, match="lipschitz"):
        certified_radius(model, x, lipschitz=float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        certified_radius(model, torch.tensor([[float("nan"), 0.0]]))


def test_radius_is_exact_for_orthogonal_linear_and_pgd_finds_the_boundary():
    """Rows orthonormal: the certified radius is the distance to the decision boundary.

    PGD must break no point at 0.9999 x radius, and nearly every point at 1.05 x radius
    (the attack is strong enough to find adversarial examples where they exist).
    """
    torch.manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(6, 4))
    model = nn.Linear(6, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(q.T)  # 4 orthonormal rows in R^6
    x = torch.randn(64, 6)
    assert abs(float(lipschitz_bound(model, (6,)).bound) - 1.0) < 1e-5
    pred, radius = certified_radius(model, x, return_prediction=True)
    check = attack_certified(model, x, box=None, steps=100, restarts=1, beyond=1.05)
    assert check.attacked == 64
    assert check.broken == 0
    assert check.max_relative_perturbation <= 0.9999 + 1e-5
    assert check.broken_beyond >= 60
    _, fooled = pgd_l2(model, x, pred, radius.float() * 0.9999, steps=100, box=None)
    assert not fooled.any()


def test_certified_accuracy_properties_and_inputs(trained):
    result, x, y = trained
    model = result.model
    eps = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5]
    acc = certified_accuracy(model, (x, y), eps=eps, batch_size=100)
    assert acc.n == len(x)
    assert acc.clean > 0.9  # the blobs are learned
    assert all(c <= acc.clean for c in acc.certified)
    assert all(a >= b for a, b in zip(acc.certified, acc.certified[1:], strict=False))
    assert acc.certified[-1] < acc.certified[0]  # the radius matters
    # by hand from the radii
    pred, radius = certified_radius(model, x, return_prediction=True)
    for e, c in zip(eps, acc.certified, strict=True):
        assert c == float(((pred == y) & (radius > e)).double().mean())
    # a DataLoader gives the same numbers
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50)
    assert certified_accuracy(model, loader, eps=eps).certified == acc.certified
    for bad in ([], [-0.1], [float("inf")], ["a"]):
        with pytest.raises(ValueError, match="eps"):
            certified_accuracy(model, (x, y), eps=bad)
    with pytest.raises(ValueError, match="empty"):
        certified_accuracy(model, [], eps=[0.1])
    with pytest.raises(ValueError, match="labels"):
        certified_accuracy(model, (x, y[:-1]), eps=[0.1])


def test_trained_certified_points_survive_pgd(trained):
    result, x, _ = trained
    check = attack_certified(result.model, x, steps=30, restarts=2, beyond=4.0)
    assert check.attacked > 0.8 * len(x)
    assert check.broken == 0, check.summary()
    assert check.max_relative_perturbation <= 0.9999 + 1e-5
    assert check.broken_beyond > 0  # the same attack does break points further out
    assert isinstance(check, AttackCheck)
    assert check.summary().startswith(f"certified but broken: 0 of {check.attacked} ")
    assert "control at 4 x radius" in check.summary()
    assert check.to_dict()["summary"] == check.summary()


def test_attack_options_are_attack_certified_keywords_with_the_same_defaults():
    keywords = {
        name: p.default
        for name, p in inspect.signature(attack_certified).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("progress", "p")
    }
    fields = {f.name: f.default for f in dataclasses.fields(AttackOptions)}
    assert fields == keywords


# --------------------------------------------------------------------------- evaluate

EVAL_EPS = [0.0, 0.1, 0.3]
EVAL_ATTACK = AttackOptions(limit=40, steps=10, beyond=4.0)


def test_evaluate_equals_its_parts(trained):
    result, x, y = trained
    model = result.model
    ev = evaluate(model, (x, y), EVAL_EPS, attack=EVAL_ATTACK, check_export=True)
    assert isinstance(ev, Evaluation)
    bound = lipschitz_bound(model, (8,)).bound
    assert ev.lipschitz.bound == bound and ev.lipschitz.input_shape == (8,)
    assert ev.accuracy == certified_accuracy(model, (x, y), eps=EVAL_EPS, lipschitz=bound)
    assert ev.accuracy.certified[1] > 0  # something is certified, so something is attacked
    direct = attack_certified(model, x, bound, limit=40, steps=10, beyond=4.0)
    assert ev.attack == direct
    assert ev.attack.attacked == 40 and ev.attack.broken == 0
    assert ev.attack_seconds is not None and ev.attack_seconds >= 0
    assert ev.export_bound == ev.lipschitz.bound
    assert ev.export_same_predictions is True
    assert 0 <= ev.export_max_radius_difference < 1e-5
    lines = ev.summary().splitlines()
    assert lines[: len(lines) - 2] == ev.accuracy.summary().splitlines()
    assert lines[-2] == ev.attack.summary()
    assert lines[-1] == "export keeps predictions and certificate: True"
    data = ev.to_dict()
    assert data["certified_accuracy"] == ev.accuracy.to_dict()["certified_accuracy"]
    assert data["attack"]["broken"] == 0 and data["export_bound"] == bound


def test_evaluate_without_attack_or_export(trained):
    result, x, y = trained
    ev = evaluate(result.model, (x, y), [0.1], attack=None)
    assert ev.attack is None and ev.attack_seconds is None
    assert ev.export_bound is None and ev.export_same_predictions is None
    assert ev.summary() == ev.accuracy.summary()
    assert ev.to_dict()["attack"] is None


def test_evaluate_rejects_images_of_another_shape(trained):
    result, x, y = trained
    expected = re.escape("the images are (7,), the classifier takes (8,)")
    loaded = load_classifier(result.checkpoint)
    with pytest.raises(InputError, match=expected):
        evaluate(loaded, (x[:, :7], y), [0.1], attack=None)
    with pytest.raises(ValueError, match=re.escape("(8,), the classifier takes (9,)")):
        evaluate(result.model, (x, y), [0.1], attack=None, input_shape=(9,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50)
    with pytest.raises(TypeError, match="ImageData"):
        evaluate(result.model, loader, [0.1], attack=None)


def test_evaluate_refuses_an_export_with_another_bound(trained, monkeypatch):
    result, x, y = trained
    module = importlib.import_module("wassnet.certify.evaluation")

    def doubled(model):
        plain = copy.deepcopy(export_classifier(model))
        with torch.no_grad():
            plain[-1].weight.mul_(2.0)
        return plain

    monkeypatch.setattr(module, "export_classifier", doubled)
    with pytest.raises(RuntimeError, match="export changed the certified bound"):
        evaluate(result.model, (x, y), [0.1], attack=None, check_export=True)


def test_load_classifier_describes_the_checkpoint(trained):
    result, x, _ = trained
    loaded = load_classifier(result.checkpoint)
    assert isinstance(loaded, LoadedClassifier)
    assert loaded.arch == "dense-small"
    assert loaded.input_shape == (8,) and loaded.num_classes == 3
    assert loaded.config == result.config.to_dict()
    assert loaded.path == Path(result.checkpoint)
    assert not loaded.model.training
    torch.testing.assert_close(loaded.model(x), result.model(x))
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.arch = "dense"  # type: ignore[misc]


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize(
    "arch, shape, overrides",
    [
        ("dense-small", (8,), {"iters": 5}),
        ("conv-small", (1, 8, 8), {"channels": ((4, 3, 2), (8, 3, 2)), "hidden": (16,)}),
    ],
)
def test_export_keeps_predictions_and_certificate(arch, shape, overrides):
    model = make_classifier(arch, shape, 4, **overrides)
    with torch.no_grad():  # move away from the orthogonal init
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.rand(40, *shape)
    plain = export_classifier(model)
    assert not any("parametrizations" in name for name, _ in plain.named_parameters())
    bound = float(lipschitz_bound(model, shape).bound)
    assert float(lipschitz_bound(plain, shape).bound) == bound
    pred, radius = certified_radius(model, x, return_prediction=True)
    epred, eradius = certified_radius(plain, x, return_prediction=True)
    assert torch.equal(pred, epred)
    torch.testing.assert_close(radius, eradius, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- training


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    x, y = blobs(n=96)
    config = TrainConfig(arch="dense-small", eps=0.3, epochs=2, batch_size=32, iters=3, seed=5)
    whole = train_classifier(config, tmp_path / "a", data=(x, y), device="cpu", progress=False)
    part = train_classifier(
        config, tmp_path / "b", data=(x, y), device="cpu", progress=False, max_steps=4
    )
    assert not part.finished and part.step == 4
    resumed = train_classifier(config, tmp_path / "b", data=(x, y), device="cpu", progress=False)
    assert resumed.finished and resumed.step == whole.step == 6
    for (name, a), (_, b) in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in resumed.history]
    # the checkpoint rebuilds the same model
    loaded = load_classifier(tmp_path / "b" / "checkpoint.pt")
    torch.testing.assert_close(loaded.model(x), resumed.model(x))
    # other options on the same folder, or resume=False, are refused
    other = TrainConfig(arch="dense-small", eps=0.5, epochs=2, batch_size=32, iters=3, seed=5)
    with pytest.raises(CheckpointError, match="eps"):
        train_classifier(other, tmp_path / "b", data=(x, y), progress=False)
    with pytest.raises(CheckpointError, match="same training data"):
        train_classifier(config, tmp_path / "b", data=(x[:64], y[:64]), progress=False)
    with pytest.raises(RunFolderError, match="already holds a run"):
        train_classifier(config, tmp_path / "b", data=(x, y), progress=False, resume=False)
    # wassnet 0.1 checkpoints name the limit train_limit (and carry no digest): continued
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    state.pop("digest")
    state["config"]["train_limit"] = state["config"].pop("limit")
    torch.save(state, tmp_path / "b" / "checkpoint.pt")
    with pytest.warns(WassnetWarning, match="no integrity digest"):  # said, not refused
        again = train_classifier(config, tmp_path / "b", data=(x, y), progress=False)
    assert again.finished and again.step == 6


def test_train_config_validation():
    for bad in ({"eps": -1.0}, {"loss": "mse"}, {"epochs": 0}, {"lr": 0.0}, {"schedule": "x"}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="architecture"):
        make_classifier("resnet", (8,), 3)


def test_keyboard_interrupt_mid_step_resumes_exactly(tmp_path, monkeypatch):
    """Ctrl-C inside a step: the last consistent checkpoint is kept, resume is exact."""
    import wassnet.certify.train as train_module

    x, y = blobs(n=96)
    config = TrainConfig(arch="dense-small", eps=0.3, epochs=2, batch_size=32, iters=3, seed=7)
    whole = train_classifier(config, tmp_path / "a", data=(x, y), progress=False)
    calls = {"n": 0}
    real = train_module.multiclass_hinge

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "multiclass_hinge", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(config, tmp_path / "b", data=(x, y), progress=False, checkpoint_every=2)
    monkeypatch.setattr(train_module, "multiclass_hinge", real)
    resumed = train_classifier(config, tmp_path / "b", data=(x, y), progress=False)
    assert resumed.finished
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ other norms (l-inf, l1)


def test_margin_factors_and_radius_rounding():
    from wassnet.certify.radius import margin_factor, radius_from_margin

    assert margin_factor(1) == 1.0 and margin_factor("inf") == 2.0
    assert margin_factor(2) > math.sqrt(2) and margin_factor(2) == math.nextafter(
        math.sqrt(2), math.inf
    )
    margin = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    for p, c in ((1, 1.0), (math.inf, 2.0), (2, math.sqrt(2))):
        r = radius_from_margin(margin, 0.5, p)
        assert r[0] == 0 and bool((r[1:] < margin[1:] / (c * 0.5)).all())  # rounded down
        assert bool((r[1:] > margin[1:] / (c * 0.5) * (1 - 1e-14)).all())
    assert multiclass_hinge(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), eps=0.5, p="inf") == 0
    assert multiclass_hinge(torch.tensor([[0.9, 0.0]]), torch.tensor([0]), eps=0.5, p="inf") > 0


def test_projected_l1_certificates_survive_l1_pgd():
    """An l1-projected network (untrained): every certified point survives l1 PGD."""
    from wassnet.nn import project_

    torch.manual_seed(4)
    model = make_classifier("dense-small", (8,), 3, constraint="projection", hidden=(16, 16))
    project_(model, 1)
    x = torch.rand(300, 8)
    y = model(x).argmax(1)  # the model's own labels: every point is correct
    ev = evaluate(model, (x, y), [1e-4], attack=AttackOptions(steps=60, beyond=50.0), p=1)
    assert ev.lipschitz.norm == "l1" and ev.lipschitz.bound <= 1 + 1e-6
    assert ev.attack.attacked == 300 and ev.attack.broken == 0
    assert ev.attack.max_relative_perturbation <= 1.0
    assert ev.attack.broken_beyond > 0  # the attack has teeth beyond the radius


@pytest.mark.parametrize(("norm", "lr"), [("inf", 1e-2), ("1", 3e-2)])
def test_projected_classifier_certificates_survive_pgd_in_its_norm(tmp_path, norm, lr):
    """Trained on blobs in l-inf and l1 (the l1 run starts from signed permutations:
    from the projected default weights it stays at chance), then attacked in its norm."""
    torch.manual_seed(0)
    x, y = blobs(n=384, d=8)
    eps = 0.02
    config = TrainConfig(
        arch="dense-small",
        eps=eps,
        epochs=6,
        batch_size=64,
        lr=lr,
        norm=norm,
        constraint="projection",
    )
    result = train_classifier(config, tmp_path, data=(x, y), device="cpu", progress=False)
    loaded = load_classifier(tmp_path / "checkpoint.pt")
    assert loaded.norm == norm
    assert not any("parametrizations" in k for k in loaded.model.state_dict())
    cert = lipschitz_bound(loaded.model, (8,), p=norm)
    assert cert.bound <= 1 + 1e-6
    ev = evaluate(loaded, (x, y), [eps], attack=AttackOptions(steps=60, restarts=2, beyond=10.0))
    assert ev.lipschitz.norm == {"inf": "linf", "1": "l1"}[norm]
    assert ev.accuracy.clean > 0.9 and ev.accuracy.certified[0] > 0.3
    assert ev.attack.attacked > 50 and ev.attack.broken == 0
    assert ev.attack.max_relative_perturbation <= 1.0  # PGD stayed inside the lp balls
    assert ev.attack.broken_beyond > 0  # the attack has teeth beyond the radius
    assert result.finished


def test_other_norms_need_projection():
    with pytest.raises(ValueError, match="projection"):
        TrainConfig(norm="inf", constraint="orthogonal")
    assert TrainConfig(norm="inf").constraint == "projection"  # chosen for the norm
    assert TrainConfig(norm="1").constraint == "projection"
    assert TrainConfig(arch="linf-dist", norm="inf").constraint == "orthogonal"
    with pytest.raises(ValueError, match="p must be"):
        TrainConfig(norm="3", constraint="projection")
    assert TrainConfig(norm="l-inf".replace("-", ""), constraint="projection").norm == "inf"
