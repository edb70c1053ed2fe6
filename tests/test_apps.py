"""Smoke tests for the applications in apps/ (tiny budgets: seconds, not minutes)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

APPS = Path(__file__).resolve().parent.parent / "apps"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, APPS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def w1_app() -> ModuleType:
    return _load("w1_groupsort_vs_relu")


def test_known_truths(w1_app: ModuleType) -> None:
    # E||X|| for X ~ N(0, I_d): sqrt(pi/2) in d = 2, and close to sqrt(d - 1/2) for large d
    assert w1_app.mean_gaussian_norm(2) == pytest.approx(math.sqrt(math.pi / 2), rel=1e-12)
    assert w1_app.mean_gaussian_norm(400) == pytest.approx(math.sqrt(399.5), rel=1e-5)
    # the 1-D bimodal W1 lies between its trivial bounds |E x - E y| = 0 and W2 ~ 0.75
    assert 0.69 < w1_app.bimodal_w1_1d() < 0.72


def test_quick_run_writes_results(w1_app: ModuleType, tmp_path: Path) -> None:
    assert w1_app.main(["--quick", "--seed", "1", "--out", str(tmp_path)]) == 0
    for name in ("results.json", "results.md", "activations.png"):
        assert (tmp_path / name).stat().st_size > 0, name

    data = json.loads((tmp_path / "results.json").read_text())
    assert data["config"]["quick"] is True
    assert data["config"]["seed"] == 1
    assert math.isfinite(data["runtime_s"])
    activations = data["config"]["activations"]
    assert set(activations) == {"maxmin", "fullsort", "relu"}
    names = {p["name"] for p in data["pairs"]}
    assert names == {"translation", "bimodal-1d", "sphere-dirac", "gauss-scale"}
    for pair in data["pairs"]:
        assert pair["truth"] > 0 and math.isfinite(pair["truth"])
        ref = pair["reference"]
        pop = ref["population"]
        assert pop["lower"] <= pop["estimate"] <= pop["upper"]
        assert set(ref["population_dense_by_activation"]) == set(activations)
        assert ref["lower"] <= ref["upper"] + 1e-9
        assert math.isfinite(ref["exact_sample_w1"])
        assert ref["lower"] - 1e-6 <= ref["exact_sample_w1"] <= ref["upper"] + 1e-6
        assert set(pair["critics"]) == set(activations)
        for critic in pair["critics"].values():
            for key in ("dual", "lipschitz", "estimate", "stderr", "ratio", "grad_norm_mean"):
                assert math.isfinite(critic[key]), key
            assert critic["lipschitz"] == pytest.approx(1.0, abs=1e-3)
            assert critic["ratio"] == pytest.approx(critic["estimate"] / pair["truth"])

    table = (tmp_path / "results.md").read_text()
    assert table.startswith("| pair | d |")
    assert table.count("\n| ") == len(data["pairs"])  # one row a pair after the header
