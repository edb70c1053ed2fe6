"""Smoke test of apps/mnist_wgan.py (tiny budget, offline MNIST)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "apps" / "mnist_wgan.py"


def test_quick_run_writes_grid_and_results(tmp_path: Path, mnist_root: Path, one_thread) -> None:
    spec = importlib.util.spec_from_file_location("mnist_wgan", APP)
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    sys.modules["mnist_wgan"] = app
    spec.loader.exec_module(app)
    out = tmp_path / "run"
    assert app.main(["--quick", "--out", str(out), "--data-root", str(mnist_root)]) == 0
    for name in ("grid.png", "curves.png", "samples_000003.png", "metrics.jsonl"):
        assert (out / name).stat().st_size > 100, name
    results = json.loads((out / "results.json").read_text())
    assert (results["config"]["arch"], results["config"]["constraint"]) == (
        "conv-small",
        "orthogonal",
    )
    assert results["critic_lipschitz_bound"] <= 1 + 1e-4
