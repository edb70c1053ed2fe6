"""The estimator's boundary: W1's input and options are checked once, by the same
functions for ``wassnet estimate`` and :func:`wassnet.estimate_w1`, and the stages below
take the resolved objects."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import wassnet.w1.io as io
from wassnet.cli import main
from wassnet.deadline import Deadline
from wassnet.errors import InputError
from wassnet.norms import L1
from wassnet.w1 import SampleOptions, estimate_w1
from wassnet.w1.estimate import estimate_clouds, estimate_files, resolve_request
from wassnet.w1.io import Clouds, InputFiles, load_clouds, resolve_clouds

pytestmark = pytest.mark.usefixtures("one_thread")


def _clouds(tmp_path: Path, weights: bool = False) -> tuple[np.ndarray, np.ndarray, InputFiles]:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 2)), rng.normal(size=(30, 2)) + 1.0
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    wa = None
    if weights:
        np.save(tmp_path / "w.npy", rng.uniform(size=40))
        wa = tmp_path / "w.npy"
    return a, b, InputFiles(tmp_path / "a.npy", tmp_path / "b.npy", weights_a=wa)


def _count_point_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the label of every cloud checked from now on."""
    seen: list[str] = []
    check = io._as_points

    def counted(arr: np.ndarray, label: str) -> np.ndarray:
        seen.append(label)
        return check(arr, label)

    monkeypatch.setattr(io, "_as_points", counted)
    return seen


def test_files_and_arrays_resolve_to_the_same_clouds(tmp_path):
    a, b, files = _clouds(tmp_path, weights=True)
    loaded = load_clouds(files)
    given = resolve_clouds(a, b, np.load(tmp_path / "w.npy"))
    for x, y in [(loaded.a, given.a), (loaded.b, given.b), (loaded.weights_a, given.weights_a)]:
        assert x.dtype == np.float64 and np.array_equal(x, y)
    assert loaded.weights_b is None and loaded.weighted and not resolve_clouds(a, b).weighted


def test_resolve_clouds_keeps_a_float64_cloud_without_copying():
    a = np.random.default_rng(0).normal(size=(10, 3))
    assert resolve_clouds(a, a + 1).a is a


@pytest.mark.parametrize(
    ("which", "match"),
    [("a", r"a\.npy: 1 non-finite"), ("b", r"b\.npy: 1 non-finite"), ("w", "weights in")],
)
def test_load_clouds_names_the_first_bad_file(tmp_path, which, match):
    _, _, files = _clouds(tmp_path, weights=True)
    bad = {"a": files.a, "b": files.b, "w": files.weights_a}[which]
    x = np.load(bad)
    x.reshape(-1)[1] = np.nan
    np.save(bad, x)
    with pytest.raises(InputError, match=match):
        load_clouds(files)


def test_a_is_checked_before_b_is_read(tmp_path):
    _, _, files = _clouds(tmp_path)
    np.save(files.a, np.array([[np.inf, 0.0]]))
    missing = InputFiles(files.a, tmp_path / "missing.npy")
    with pytest.raises(InputError, match=r"a\.npy: 1 non-finite"):
        load_clouds(missing)


def test_the_cli_checks_each_file_once(tmp_path, monkeypatch):
    _, _, files = _clouds(tmp_path)
    seen = _count_point_checks(monkeypatch)
    argv = ["estimate", str(files.a), str(files.b), "--target", "sample", "--json", "--quiet"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert seen == [str(files.a), str(files.b)]
    assert json.loads(result.stdout)["sample"]["lower"] > 0


def test_the_api_checks_each_cloud_once(monkeypatch):
    rng = np.random.default_rng(4)
    seen = _count_point_checks(monkeypatch)
    estimate_w1(rng.normal(size=(20, 2)), rng.normal(size=(25, 2)), target="sample")
    assert seen == ["A", "B"]


def test_files_arrays_and_resolved_input_give_the_same_bracket(tmp_path):
    a, b, files = _clouds(tmp_path)
    request = resolve_request(target="sample", metric="cityblock")
    from_files, clouds = estimate_files(files, request)
    from_clouds = estimate_clouds(
        resolve_clouds(a, b), resolve_request(target="sample", metric="cityblock")
    )
    from_api = estimate_w1(a, b, target="sample", metric="cityblock")
    from_norm = estimate_w1(a, b, target="sample", metric=L1)
    assert isinstance(clouds, Clouds) and np.array_equal(clouds.a, a)
    assert request.norm is L1 and request.metric == "cityblock"
    for r in (from_clouds, from_api, from_norm):
        assert (r.sample.lower, r.sample.upper) == (
            from_files.sample.lower,
            from_files.sample.upper,
        )
        assert r.metric == "cityblock"


def test_resolve_request_defaults_and_the_clock():
    request = resolve_request()
    assert request.target == "both" and request.exact == "never" and request.seed == 0
    assert request.sample == SampleOptions() and request.deadline.seconds is None
    started = Deadline(5.0)
    kept = resolve_request(sample=SampleOptions(time_budget=5.0), deadline=started)
    assert kept.deadline is started
    restarted = resolve_request(sample=SampleOptions(time_budget=2.0), deadline=started)
    assert restarted.deadline.seconds == 2.0 and restarted.deadline.start == started.start


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": "nope"}, "target"),
        ({"metric": "cosine"}, "metric"),
        ({"exact": "maybe"}, "exact"),
        ({"sample": {}}, "SampleOptions"),
        ({"population": 3}, "PopulationOptions"),
        ({"seed": -1}, "seed"),
    ],
)
def test_resolve_request_refuses_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_request(**kwargs)


def test_population_refusal_in_the_cli_is_one_usage_line(tmp_path):
    _, _, files = _clouds(tmp_path)
    argv = ["estimate", str(files.a), str(files.b), "--critics", "linear,conv"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if "Error" in line]
    assert len(errors) == 1 and "--critics" in errors[0] and "--image-shape" in errors[0]


def _imports(module: str) -> set[str]:
    """Every module a wassnet module imports, at the top or inside functions."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    found: set[str] = set()
    for node in ast.walk(ast.parse(Path(spec.origin).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_native_assignment_solver_does_not_import_column_generation():
    assert "wassnet.ot.sparse" not in _imports("wassnet.ot.native")
    assert "wassnet.ot.native" in _imports("wassnet.ot.sparse")
    assert not _imports("wassnet.ot.matching") & {"wassnet.ot.native", "wassnet.ot.sparse"}
