"""``wassnet estimate A B``: file formats, the JSON result, plots, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import pot_w1
from scipy.stats import wasserstein_distance

from wassnet.cli import main

FAST = ["--json", "--quiet"]

#: Containment slack: the float64 rounding of the reference solver.
RTOL = 1e-12

pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args: str):
    """``wassnet estimate ARGS`` (the sample question unless ``--target`` is given)."""
    argv = [str(a) for a in args]
    if "--target" not in argv:
        argv += ["--target", "sample"]
    return CliRunner().invoke(main, ["estimate", *argv])


def run_json(*args: str) -> dict:
    result = run(*args, *FAST)
    assert result.exit_code == 0, result.output
    assert result.exception is None
    return json.loads(result.stdout)


def assert_contains(out: dict, exact: float) -> None:
    sample = out["sample"]
    assert sample["lower"] <= exact * (1 + RTOL)
    assert exact <= sample["upper"] * (1 + RTOL)
    assert sample["lower"] <= sample["estimate"] <= sample["upper"]
    assert sample["exact"] == pytest.approx(exact, rel=1e-9)


@pytest.fixture(scope="module")
def clouds():
    rng = np.random.default_rng(0)
    return rng.normal(size=(60, 2)), rng.normal(size=(45, 2)) * 0.8 + 0.7


# ----------------------------------------------------------------------------- formats


def test_npy_and_npz_with_key(tmp_path, clouds):
    a, b = clouds
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    np.savez(tmp_path / "a.npz", points=a, other=a[:5])
    np.savez(tmp_path / "b.npz", points=b, other=b[:7])
    exact = pot_w1(a, b)
    out = run_json(tmp_path / "a.npy", tmp_path / "b.npy", "--exact", "always")
    assert_contains(out, exact)
    assert (out["n_a"], out["n_b"], out["dim"], out["target"]) == (60, 45, 2, "sample")
    assert out["floor"] is None and out["sample"]["route"] == "dense"
    # the same arrays from .npz archives give the very same result
    npz = run_json(tmp_path / "a.npz", tmp_path / "b.npz", "--key", "points", "--exact", "always")
    for key in ("lower", "upper", "estimate", "exact"):
        assert npz["sample"][key] == out["sample"][key], key


def test_csv_input_and_2d_plot(tmp_path, clouds):
    a, b = clouds
    # a header line, comma-separated; the other file whitespace-separated with comments
    np.savetxt(tmp_path / "a.csv", a, delimiter=",", header="x,y", comments="")
    np.savetxt(tmp_path / "b.txt", b, header="cloud B")
    png = tmp_path / "out.png"
    out = run_json(tmp_path / "a.csv", tmp_path / "b.txt", "--plot", png, "--exact", "always")
    assert_contains(out, pot_w1(np.loadtxt(tmp_path / "a.csv", delimiter=",", skiprows=1), b))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_weight_files_and_3d_plot(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(80, 3)), rng.normal(size=(50, 3)) + 0.5
    wa, wb = rng.random(80) * 4 + 0.1, rng.random(50) + 0.1
    for name, arr in (("a.npy", a), ("b.npy", b), ("wa.npy", wa)):
        np.save(tmp_path / name, arr)
    np.savetxt(tmp_path / "wb.csv", wb[:, None])  # a [m, 1] column of weights
    png = tmp_path / "hist.png"
    out = run_json(
        *(tmp_path / "a.npy", tmp_path / "b.npy"),
        *("--weights-a", tmp_path / "wa.npy", "--weights-b", tmp_path / "wb.csv"),
        *("--plot", png, "--exact", "always"),
    )
    assert_contains(out, pot_w1(a, b, wa, wb))
    # the weights matter: the unweighted W1 is outside the bracket
    unweighted = pot_w1(a, b)
    assert not out["sample"]["lower"] <= unweighted <= out["sample"]["upper"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_one_dimensional_inputs_and_text_summary(tmp_path):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=70), rng.exponential(size=40)
    np.save(tmp_path / "a.npy", a)
    np.savetxt(tmp_path / "b.csv", b)  # one column: points on the line
    expected = wasserstein_distance(a, b)
    out = run_json(tmp_path / "a.npy", tmp_path / "b.csv")
    sample = out["sample"]
    assert sample["lower"] <= expected * (1 + 1e-15) and expected <= sample["upper"] * (1 + 1e-15)
    assert sample["estimate"] == pytest.approx(expected, rel=1e-14)
    assert out["dim"] == 1 and sample["relative_width"] < 1e-14 and sample["route"] == "line"
    result = run(tmp_path / "a.npy", tmp_path / "b.csv", "--quiet")
    assert result.exit_code == 0, result.output
    assert "sample W1" in result.output and "certified" in result.output
    assert f"{expected:.6g}" in result.output
    png = tmp_path / "line.png"
    assert run(tmp_path / "a.npy", tmp_path / "b.csv", "--quiet", "--plot", png).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- bad input


def _bad_inputs(tmp: Path) -> dict[str, tuple[list, str]]:
    """Each case: the command line after ``estimate``, and a word its error must name."""
    rng = np.random.default_rng(3)
    good = tmp / "good.npy"
    np.save(good, rng.normal(size=(20, 2)))
    np.save(tmp / "good3.npy", rng.normal(size=(20, 3)))
    np.save(tmp / "w19.npy", np.ones(19))
    np.save(tmp / "wneg.npy", -np.ones(20))
    (tmp / "folder.npy").mkdir()
    np.save(tmp / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    nan = rng.normal(size=(20, 2))
    nan[3, 1] = np.nan
    np.save(tmp / "nan.npy", nan)
    inf = rng.normal(size=(20, 2))
    inf[0, 0] = -np.inf
    np.save(tmp / "inf.npy", inf)
    np.save(tmp / "empty.npy", np.zeros((0, 2)))
    np.savez(tmp / "two.npz", first=rng.normal(size=(20, 2)), second=rng.normal(size=(9, 2)))
    (tmp / "corrupt.npy").write_bytes(rng.bytes(300))
    (tmp / "text.csv").write_text("1,2\n3,oops\n")
    (tmp / "ragged.csv").write_text("1,2\n3,4,5\n")
    (tmp / "points.json").write_text("[[1, 2]]")
    np.save(tmp / "big.npy", np.array([[2**53 + 1, 0]] * 20, dtype=np.int64))
    np.save(tmp / "good15.npy", rng.normal(size=(15, 2)))
    (tmp / "taken.png").write_bytes(b"a figure the user keeps")
    return {
        "missing file": ([tmp / "nope.npy", good], "no such file"),
        "directory": ([good, tmp / "folder.npy"], "directory"),
        "pickled object array": ([tmp / "pickled.npy", good], "pickle"),
        "NaN": ([tmp / "nan.npy", good], "NaN"),
        "inf": ([good, tmp / "inf.npy"], "inf"),
        "empty array": ([tmp / "empty.npy", good], "empty"),
        "mismatched d": ([good, tmp / "good3.npy"], "dimension mismatch"),
        "npz without --key": ([tmp / "two.npz", good], "key"),
        "wrong --key": ([tmp / "two.npz", tmp / "two.npz", "--key", "third"], "'third'"),
        "--key on .npy": ([good, good, "--key", "x"], "key"),
        "corrupt file": ([tmp / "corrupt.npy", good], "corrupt.npy"),
        "unparsable csv": ([good, tmp / "text.csv"], "oops"),
        "ragged csv": ([tmp / "ragged.csv", good], "ragged"),
        "unsupported suffix": ([tmp / "points.json", good], ".json"),
        "weights of the wrong length": ([good, good, "--weights-a", tmp / "w19.npy"], "19"),
        "negative weights": ([good, good, "--weights-b", tmp / "wneg.npy"], "negative"),
        "missing weights file": ([good, good, "--weights-b", tmp / "nope.npy"], "no such file"),
        "exact bogus": ([good, good, "--exact", "bogus"], "bogus"),
        "bad --route": ([good, good, "--route", "magic"], "magic"),
        "time budget 0": ([good, good, "--time-budget", "0"], "--time-budget"),
        "plot into a missing folder": ([good, good, "--plot", tmp / "no" / "f.png"], "--plot"),
        "plot over an existing file": ([good, good, "--plot", tmp / "taken.png"], "--force"),
        "time budget nan": ([good, good, "--time-budget", "nan"], "finite"),
        "critic budget inf": ([good, good, "--critic-budget", "inf"], "finite"),
        "confidence nan": ([good, good, "--confidence", "nan"], "finite"),
        "device meta": ([good, good, "--device", "meta"], "meta"),
        "assignment route on n != m": (
            [good, tmp / "good15.npy", "--route", "assignment"],
            "n == m",
        ),
        "integers beyond 2^53": ([tmp / "big.npy", good], "2^53"),
    }


BAD_CASES = [
    "missing file",
    "directory",
    "pickled object array",
    "NaN",
    "inf",
    "empty array",
    "mismatched d",
    "npz without --key",
    "wrong --key",
    "--key on .npy",
    "corrupt file",
    "unparsable csv",
    "ragged csv",
    "unsupported suffix",
    "weights of the wrong length",
    "negative weights",
    "missing weights file",
    "exact bogus",
    "bad --route",
    "time budget 0",
    "plot into a missing folder",
    "plot over an existing file",
    "time budget nan",
    "critic budget inf",
    "confidence nan",
    "device meta",
    "assignment route on n != m",
    "integers beyond 2^53",
]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    return _bad_inputs(tmp_path_factory.mktemp("bad"))


def test_every_bad_input_is_exercised(bad_inputs):
    assert set(bad_inputs) == set(BAD_CASES)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_error_line(bad_inputs, case):
    args, word = bad_inputs[case]
    # defaults first: a bad option later on the line overrides them
    result = run("--quiet", *args)
    assert result.exit_code != 0
    # an uncaught exception would be stored here (CliRunner prints no traceback)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if "Error" in line]
    assert len(error_lines) == 1, result.output
    assert error_lines[0].startswith("Error: ")
    assert word in error_lines[0]
    assert "Error" in result.stderr and result.stdout == ""
    if result.exit_code == 1:  # not a usage error: the whole output is that one line
        assert result.output.strip() == error_lines[0]
    else:  # click's usage errors: usage, hint, then the error line
        assert result.exit_code == 2


# ----------------------------------------------------------------------------- options


def test_plot_of_collinear_2d_clouds(tmp_path):
    x = np.random.default_rng(4).normal(size=30)
    np.save(tmp_path / "a.npy", np.c_[x, 2 * x])
    np.save(tmp_path / "b.npy", np.c_[x + 1, 2 * x + 2])
    png = tmp_path / "line.png"
    result = run(tmp_path / "a.npy", tmp_path / "b.npy", *FAST, "--plot", png)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sample"]["lower"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_floor_route_and_time_budget_options(tmp_path, clouds):
    a, b = clouds
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b[:60] if len(b) >= 60 else np.r_[b, b[:15]])
    out = run_json(
        tmp_path / "a.npy",
        tmp_path / "b.npy",
        "--floor",
        "--route",
        "assignment",
        "--time-budget",
        "30",
    )
    assert out["floor"]["lower"] <= out["floor"]["upper"]
    assert out["sample"]["route"] == "assignment"
    text = run(tmp_path / "a.npy", tmp_path / "b.npy", "--floor", "--quiet")
    assert text.exit_code == 0 and "sampling floor" in text.stdout
    bad = run(tmp_path / "a.npy", tmp_path / "b.npy", "--time-budget", "-1")
    assert bad.exit_code == 2 and "Error" in bad.output


def test_progress_bar_shows_the_bracket(tmp_path, clouds):
    a, b = clouds
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    result = run(tmp_path / "a.npy", tmp_path / "b.npy", "--json")
    assert result.exit_code == 0
    assert "lower=" in result.stderr and "upper=" in result.stderr
    json.loads(result.stdout)  # the bar goes to stderr, the JSON stays parseable


# ----------------------------------------------------------------------------- population

QUICK_POPULATION = ["--critics", "linear,radial", "--critic-budget", "20"]


def test_default_answers_both_questions(tmp_path):
    rng = np.random.default_rng(5)
    np.save(tmp_path / "a.npy", rng.uniform(-1, 1, (120, 2)))
    np.save(tmp_path / "b.npy", rng.uniform(-1, 1, (100, 2)) + np.array([1.0, 0.0]))
    png = tmp_path / "both.png"
    argv = ["estimate", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--plot", str(png)]
    result = CliRunner().invoke(main, [*argv, *FAST, *QUICK_POPULATION])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["target"] == "both"
    population, sample = out["population"], out["sample"]
    assert population["lower"] <= 1.0 <= population["upper"]
    assert population["confidence"] == 0.95
    assert population["upper"] > sample["upper"]
    assert out["floor"] is not None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = run(
        tmp_path / "a.npy",
        tmp_path / "b.npy",
        "--target",
        "both",
        "--quiet",
        "--confidence",
        "0.9",
        "--folds",
        "3",
        *QUICK_POPULATION,
    )
    assert text.exit_code == 0, text.output
    assert "population W1" in text.stdout and "90% confidence" in text.stdout


def test_population_histogram_plot_in_higher_dimension(tmp_path):
    rng = np.random.default_rng(6)
    np.save(tmp_path / "a.npy", rng.normal(size=(80, 5)))
    np.save(tmp_path / "b.npy", 2 * rng.normal(size=(80, 5)))
    png = tmp_path / "hist.png"
    result = run(
        tmp_path / "a.npy",
        tmp_path / "b.npy",
        "--target",
        "population",
        *FAST,
        "--plot",
        png,
        *QUICK_POPULATION,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["population"]["folds"][0]["critic"] == "radial"
    assert png.stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--critics", "linear,cnn"], 2, "--critics"),
        (["--confidence", "1"], 2, "--confidence"),
        (["--folds", "1"], 2, "--folds"),
        (["--critic-budget", "0"], 2, "--critic-budget"),
        (["--critics", "linear,conv"], 2, "--image-shape"),
        (["--image-shape", "1,2"], 2, "--image-shape"),
        (["--weights-a", "{w}"], 1, "unweighted"),
    ],
)
def test_population_usage_errors_are_one_line(tmp_path, extra, code, message):
    rng = np.random.default_rng(7)
    np.save(tmp_path / "a.npy", rng.normal(size=(30, 2)))
    np.save(tmp_path / "b.npy", rng.normal(size=(30, 2)))
    np.save(tmp_path / "w.npy", np.ones(30))
    extra = [e.format(w=tmp_path / "w.npy") for e in extra]
    result = run(tmp_path / "a.npy", tmp_path / "b.npy", "--target", "population", *extra)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    if code == 1:
        assert len(result.output.strip().splitlines()) == 1
