"""Smoke test of apps/mnist_certified.py (a few MNIST batches)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "apps" / "mnist_certified.py"


@pytest.mark.usefixtures("one_thread")
def test_quick_run_certifies_and_survives_the_attack(mnist_root: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("mnist_certified", APP)
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    sys.modules["mnist_certified"] = app
    spec.loader.exec_module(app)
    out = tmp_path / "run"
    assert app.main(["--quick", "--data-root", str(mnist_root), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["attack"]["broken"] == 0
    assert results["export_same_predictions_and_bound"]
    curve = results["curve"]["certified_accuracy"]
    assert curve == sorted(curve, reverse=True) and curve[0] <= results["clean_accuracy"]
    assert (out / "certified_accuracy.png").stat().st_size > 0
    assert "Li et al." in (out / "results.md").read_text()
