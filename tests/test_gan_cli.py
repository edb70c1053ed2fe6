"""`wassnet gan` on the command line: sampling, toy W1, and one clear line for bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wassnet.checkpoint import save_checkpoint
from wassnet.cli import main

TINY = [
    *("--dataset", "8gaussians", "--arch", "dense-small", "--batch-size", "32"),
    *("--n-critic", "1", "--latent-dim", "4", "--generator-width", "16"),
    *("--width", "16", "--iters", "3", "--eval-samples", "64", "--quiet"),
]


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def _one_error_line(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = _run("gan", "train", "--out", str(out), "--steps", "4", "--json", *TINY)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["steps"] == 4 and data["critic_lipschitz_bound"] <= 1 + 1e-4
    return out


def test_sample_png_and_npy(toy_checkpoint: Path, tmp_path: Path) -> None:
    result = _run("gan", "sample", "--checkpoint", str(toy_checkpoint), "--n", "50",
                  "--out", str(tmp_path / "s.npy"), "--seed", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    pts = np.load(tmp_path / "s.npy")
    assert pts.shape == (50, 2) and np.isfinite(pts).all()
    again = _run("gan", "sample", "--checkpoint", str(toy_checkpoint / "checkpoint.pt"),
                 "--n", "50", "--out", str(tmp_path / "t.npy"), "--seed", "3")  # fmt: skip
    assert again.exit_code == 0
    np.testing.assert_array_equal(pts, np.load(tmp_path / "t.npy"))  # seeded
    png = _run(
        "gan", "sample", "--checkpoint", str(toy_checkpoint), "--out", str(tmp_path / "s.png")
    )
    assert png.exit_code == 0 and (tmp_path / "s.png").stat().st_size > 1000


def test_fid_on_toy_reports_exact_w1(toy_checkpoint: Path, pot_w1_available=None) -> None:
    result = _run("gan", "fid", "--checkpoint", str(toy_checkpoint), "--n", "200", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["dataset"] == "8gaussians" and data["n"] == 200
    assert data["w1"] > data["floor"] > 0  # 4 steps: far from the data, above the noise floor


@pytest.mark.parametrize(
    ("norm", "p", "metric"), [("inf", math.inf, "chebyshev"), ("1", 1, "cityblock")]
)
def test_projected_critic_in_another_norm(tmp_path: Path, one_thread, norm, p, metric) -> None:
    """A WGAN whose critic is projected in l-inf (l1) minimizes W1 under the chebyshev
    (cityblock) cost: the critic's bound is certified in that norm after every logged
    step, the toy W1 is computed with that cost, and a run continues in its norm."""
    from wassnet.checkpoint import load_checkpoint
    from wassnet.gan.trainer import GANConfig, build_models
    from wassnet.nn import lipschitz_bound

    out = tmp_path / "run"
    args = ["--constraint", "projection", "--norm", norm, "--log-every", "1"]
    result = _run("gan", "train", "--out", str(out), "--steps", "3", "--json", *args, *TINY)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["config"]["norm"] == norm
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["critic_lipschitz_bound"] <= 1 + 1e-6 for r in rows[1:])
    state = load_checkpoint(out / "checkpoint.pt", kind="gan")
    _, critic = build_models(GANConfig.from_dict(state["config"]), (2,))
    critic.load_state_dict(state["critic"])
    assert lipschitz_bound(critic, (2,), p=p).bound <= 1 + 1e-6
    assert lipschitz_bound(critic, (2,), p=2).bound > 0
    fid = _run("gan", "fid", "--checkpoint", str(out), "--n", "100", "--json")
    assert json.loads(fid.output)["metric"] == metric
    more = _run("gan", "train", "--out", str(out), "--steps", "4", "--quiet", *TINY)
    assert more.exit_code == 0, more.output
    other = _run("gan", "train", "--out", str(out), "--steps", "5", "--norm", "2", *TINY)
    assert other.exit_code == 1 and "norm" in other.output


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--dataset", "8gaussians", "--arch", "conv-small"], ["convolutional", "8gaussians"]),
        (["--dataset", "8gaussians", "--constraint", "none", "--gp", "0"], ["gradient penalty"]),
        (["--dataset", "ring", "--width", "15"], ["even"]),
        (["--dataset", "ring", "--norm", "inf"], ["norm inf", "projection"]),
        (["--dataset", "ring", "--norm", "1", "--constraint", "none"], ["norm 1", "projection"]),
        (["--dataset", "ring", "--device", "cuda:7"], ["cuda:7", "no CUDA GPU"]),
    ],
)
def test_bad_train_options(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    _one_error_line(
        _run("gan", "train", "--out", str(tmp_path / "r"), "--quiet", *args), *fragments
    )


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    bad = (
        ["--steps", "0"],
        ["--dataset", "imagenet"],
        ["--lr-g", "-1"],
        ["--lr-g", "nan"],
        ["--lr-c", "inf"],
        ["--gp", "nan"],
        ["--beta1", "nan"],
        ["--device", "tpu"],
        ["--device", "meta"],
        ["--resume"],  # nothing to continue in a new folder
    )
    for args in bad:
        result = _run("gan", "train", "--out", str(tmp_path / "r"), *args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # refused before any work
    bad_out = _run("gan", "sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "x.txt"))
    assert bad_out.exit_code == 2 and ".png, .npy" in bad_out.output


def test_run_folder_rules(toy_checkpoint: Path, tmp_path: Path) -> None:
    again = _run("gan", "train", "--out", str(toy_checkpoint), *TINY)  # continued, not replaced
    assert again.exit_code == 0 and "resumed from step 4" in again.output, again.output
    missing = _run("gan", "train", "--out", str(tmp_path / "none"), "--resume")
    assert missing.exit_code == 2 and "no run to continue" in missing.output
    changed = _run("gan", "train", "--out", str(toy_checkpoint), "--resume", "--lr-c", "0.5")
    _one_error_line(changed, "lr_c", "cannot resume")
    fewer = _run("gan", "train", "--out", str(toy_checkpoint), "--resume", "--steps", "2")
    _one_error_line(fewer, "below the checkpoint")


@pytest.mark.parametrize("command", ["sample", "fid"])
def test_corrupt_or_foreign_checkpoint(tmp_path: Path, command: str) -> None:
    out = ["--out", str(tmp_path / "g.png")] if command == "sample" else []
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 not a checkpoint at all")
    _one_error_line(_run("gan", command, "--checkpoint", str(corrupt), *out), "cannot read")
    foreign = save_checkpoint({"kind": "classifier"}, tmp_path / "clf.pt")
    _one_error_line(_run("gan", command, "--checkpoint", str(foreign), *out), "'gan'")
    _one_error_line(
        _run("gan", command, "--checkpoint", str(tmp_path / "missing.pt"), *out), "does not exist"
    )


def test_corrupt_checkpoint_on_resume(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    _one_error_line(_run("gan", "train", "--out", str(tmp_path / "run"), "--resume"), "cannot read")


def test_train_defaults_match_config() -> None:
    """`wassnet gan train` and `GANConfig` state the same defaults (they are written twice)."""
    from dataclasses import fields

    from wassnet.gan.cli import CONFIG_FIELDS, train
    from wassnet.gan.trainer import GANConfig

    defaults = {f.name: f.default for f in fields(GANConfig)}
    assert set(CONFIG_FIELDS) == set(defaults)
    checked = 0
    for param in train.params:
        if param.name in CONFIG_FIELDS:
            assert param.default == defaults[param.name], param.name
            checked += 1
    assert checked == len(CONFIG_FIELDS)


def test_old_option_spellings_still_work(tmp_path: Path, one_thread) -> None:
    """wassnet 0.1's --critic, --critic-width, --bjorck-iters, --data-limit: hidden aliases."""
    old = [
        *("--dataset", "ring", "--critic", "relu-dense", "--critic-width", "8"),
        *("--bjorck-iters", "2", "--data-limit", "5", "--steps", "2", "--batch-size", "8"),
        *("--n-critic", "1", "--latent-dim", "2", "--generator-width", "8"),
        *("--eval-samples", "16", "--quiet", "--json"),
    ]
    result = _run("gan", "train", "--out", str(tmp_path / "old"), *old)
    assert result.exit_code == 0, result.output
    config = json.loads(result.output)["config"]
    assert (config["arch"], config["constraint"], config["width"]) == ("dense-small", "none", 8)
    assert (config["iters"], config["limit"], config["gp"]) == (2, 5, 10.0)
    text = _run("gan", "train", "--help").output
    for spelling in ("--critic ", "--critic-width", "--bjorck-iters", "--data-limit", "--resume"):
        assert spelling not in text
