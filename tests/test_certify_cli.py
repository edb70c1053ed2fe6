"""`wassnet classify train / certify / export` on a few MNIST batches, and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from wassnet.certify import load_classifier
from wassnet.checkpoint import save_checkpoint
from wassnet.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_error_line(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def run_dir(mnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("classify") / "run"
    result = invoke(
        "classify", "train", "--dataset", "mnist", "--arch", "conv-small", "--epochs", "1",
        "--limit", "512", "--batch-size", "32", "--lr", "3e-3", "--eps", "1.58",
        "--eval-limit", "100", "--data-root", mnist_root, "--out", out, "--quiet", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["finished"] and data["step"] == 16
    test = data["test"]
    assert test["n"] == 100
    assert test["certified_accuracy"]["1.58"] <= test["clean_accuracy"]
    return out


def test_certify_reports_accuracy_and_zero_broken(run_dir, mnist_root):
    result = invoke(
        "classify", "certify", "--checkpoint", run_dir / "checkpoint.pt",
        "--eps", "0.1", "0.5", "1.0", "1.58", "--limit", "200", "--attack-n", "40",
        "--attack-steps", "10", "--data-root", mnist_root, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the progress bar goes to stderr
    assert "PGD" in result.stderr
    certified = [data["certified_accuracy"][k] for k in ("0.1", "0.5", "1", "1.58")]
    assert data["n"] == 200 and data["clean_accuracy"] > 0.3
    assert all(c <= data["clean_accuracy"] for c in certified)
    assert certified == sorted(certified, reverse=True)
    assert certified[0] > 0
    assert data["attack"]["broken"] == 0 and data["attack"]["attacked"] == 40
    assert data["lipschitz_bound"] < 1.001

    text = invoke(
        "classify", "certify", "--checkpoint", run_dir / "checkpoint.pt", "--limit", "50",
        "--attack-limit", "10", "--attack-steps", "5", "--data-root", mnist_root, "--quiet",
    )  # fmt: skip
    assert text.exit_code == 0, text.output
    assert "certified accuracy at eps=1.58" in text.output
    assert "certified but broken: 0 of 10" in text.output


def test_export_program_keeps_predictions_and_bound(run_dir, tmp_path, mnist_root):
    target = tmp_path / "model.pt2"
    result = invoke(
        "classify", "export", "--checkpoint", run_dir / "checkpoint.pt", "--out", target, "--json"
    )
    assert result.exit_code == 0, result.output
    meta = json.loads(result.output)
    model = load_classifier(run_dir / "checkpoint.pt").model
    extra = {"wassnet.json": ""}
    program = torch.export.load(str(target), extra_files=extra).module()
    assert json.loads(extra["wassnet.json"])["lipschitz_bound"] == meta["lipschitz_bound"]
    from wassnet.nn import lipschitz_bound

    assert meta["lipschitz_bound"] == float(lipschitz_bound(model, (1, 28, 28)).bound)
    x = torch.rand(7, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-6)


def test_export_never_overwrites_without_force(run_dir, tmp_path):
    checkpoint = run_dir / "checkpoint.pt"
    before = checkpoint.read_bytes()
    same = invoke("classify", "export", "--checkpoint", checkpoint, "--out", checkpoint, "--force")
    assert same.exit_code == 2 and "is the checkpoint being exported" in same.output
    assert checkpoint.read_bytes() == before  # the training run is not lost
    existing = tmp_path / "keep.pt2"
    existing.write_bytes(b"a user's file")
    refused = invoke("classify", "export", "--checkpoint", checkpoint, "--out", existing)
    assert refused.exit_code == 2 and "--force" in refused.output
    assert existing.read_bytes() == b"a user's file"
    forced = invoke("classify", "export", "--checkpoint", checkpoint, "--out", existing, "--force")
    assert forced.exit_code == 0, forced.output
    assert torch.export.load(str(existing)).module() is not None
    assert not list(tmp_path.glob(".keep.pt2.*"))  # no temporary file left behind
    nowhere = invoke(
        "classify", "export", "--checkpoint", checkpoint, "--out", tmp_path / "no/m.pt2"
    )
    assert nowhere.exit_code == 2 and "does not exist" in nowhere.output  # checked before work


def test_bad_checkpoints_give_one_error_line(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    assert_one_error_line(
        invoke("classify", "certify", "--checkpoint", corrupt),
        1,
        "cannot read wassnet checkpoint",
        "not a torch file",
    )
    assert_one_error_line(
        invoke("classify", "certify", "--checkpoint", tmp_path / "missing.pt"), 1, "does not exist"
    )
    gan = save_checkpoint({"kind": "gan"}, tmp_path / "gan.pt")
    assert_one_error_line(invoke("classify", "certify", "--checkpoint", gan), 1, "'gan'")
    truncated = tmp_path / "truncated.pt"
    save_checkpoint({"kind": "classifier", "x": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    assert_one_error_line(
        invoke("classify", "export", "--checkpoint", truncated, "--out", tmp_path / "m.pt2"), 1
    )
    foreign = save_checkpoint({"kind": "classifier"}, tmp_path / "foreign.pt")
    assert_one_error_line(invoke("classify", "certify", "--checkpoint", foreign), 1, "model")


@pytest.mark.parametrize(
    "eps, fragment",
    [(["-1"], "eps"), (["abc"], "not a number"), (["nan"], "eps"), (["0.5", "x"], "not a number")],
)
def test_bad_eps_gives_one_error_line(tmp_path, eps, fragment):
    result = invoke("classify", "certify", "--checkpoint", tmp_path / "c.pt", "--eps", *eps)
    assert_one_error_line(result, 2, fragment)


def test_bad_options_give_one_error_line(run_dir, tmp_path, mnist_root):
    assert_one_error_line(
        invoke("classify", "train", "--out", tmp_path, "--epochs", "0"), 2, "epochs"
    )
    assert_one_error_line(
        invoke("classify", "train", "--out", tmp_path, "--arch", "vgg"), 2, "arch"
    )
    assert_one_error_line(invoke("classify", "train", "--out", tmp_path, "--eps", "-0.5"), 2, "eps")
    for bad in (["--lr", "nan"], ["--eps", "inf"], ["--device", "meta"], ["--resume"]):
        result = invoke("classify", "train", "--out", tmp_path / "new", *bad)
        assert result.exit_code == 2 and "Traceback" not in result.output, (bad, result.output)
    assert not (tmp_path / "new").exists()
    stray = invoke("classify", "certify", "--checkpoint", tmp_path / "c.pt", "0.5")
    assert_one_error_line(stray, 2, "unexpected")
    resumed = invoke(
        "classify", "train", "--arch", "conv-small", "--epochs", "2", "--train-limit", "256",
        "--batch-size", "64", "--data-root", mnist_root, "--out", run_dir, "--quiet",
    )  # fmt: skip
    assert_one_error_line(resumed, 1, "epochs", "other options")
    assert_one_error_line(
        invoke("classify", "train", "--out", tmp_path / "r", "--device", "cuda:7", "--quiet"),
        1,
        "device",
    )


def test_a_run_folder_is_continued_with_its_saved_options(run_dir, mnist_root):
    """Only --out (and where the data is): the saved options; the old --train-limit too."""
    again = invoke(
        "classify", "train", "--out", run_dir, "--data-root", mnist_root, "--eval-limit", "0",
        "--json", "--quiet",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    data = json.loads(again.output)
    assert data["finished"] and data["step"] == 16 and data["config"]["limit"] == 512
    old = invoke(
        "classify", "train", "--out", run_dir, "--data-root", mnist_root, "--eval-limit", "0",
        "--train-limit", "512", "--quiet",
    )  # fmt: skip
    assert old.exit_code == 0, old.output


def test_train_defaults_match_config():
    import dataclasses

    from wassnet.certify.cli import CONFIG_FIELDS, train
    from wassnet.certify.train import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert set(CONFIG_FIELDS) == set(defaults)
    params = {p.name: p.default for p in train.params if p.name in CONFIG_FIELDS}
    assert params == defaults


def test_linf_run_trains_certifies_and_exports_in_its_norm(mnist_root, tmp_path):
    out = tmp_path / "linf"
    trained = invoke(
        "classify", "train", "--arch", "conv-small", "--norm", "inf", "--constraint",
        "projection", "--eps", "0.1", "--epochs", "1", "--limit", "256", "--batch-size", "32",
        "--eval-limit", "50", "--data-root", mnist_root, "--out", out, "--quiet", "--json",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    data = json.loads(trained.output)
    assert data["config"]["norm"] == "inf" and data["test"]["norm"] == "linf"
    assert data["test"]["lipschitz_bound"] <= 1 + 1e-6
    certified = invoke(
        "classify", "certify", "--checkpoint", out / "checkpoint.pt", "--limit", "50",
        "--attack-limit", "20", "--attack-steps", "5", "--data-root", mnist_root, "--json",
        "--quiet",
    )  # fmt: skip
    assert certified.exit_code == 0, certified.output
    result = json.loads(certified.output)
    assert result["norm"] == "linf" and set(result["certified_accuracy"]) == {"0.1", "0.3"}
    assert result["attack"]["broken"] == 0
    exported = invoke(
        "classify", "export", "--checkpoint", out / "checkpoint.pt", "--out", tmp_path / "m.pt2",
        "--json",
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    meta = json.loads(exported.output)
    assert meta["norm"] == "inf" and meta["radius"] == "margin / (2 * lipschitz_bound)"
    refused = invoke(
        "classify", "train", "--norm", "inf", "--constraint", "orthogonal", "--out",
        tmp_path / "no", "--quiet",
    )  # fmt: skip
    assert refused.exit_code == 1 and "projection" in refused.output
