"""Every failure one line, every corruption noticed (the fuzz classes of the reliability
issue, each as a regression test).

* seeds, devices and sizes that cannot work are refused before any work, in one line;
* a full disk (a file size limit, in a child process) leaves the last good checkpoint
  and says so in one line; ``classify export`` never aborts in C++;
* the hidden old spellings behave as their new options or are refused beside them;
* an empty ``--out`` is refused; usage errors take one line;
* a checkpoint whose bytes were damaged is refused (SHA-256 digest), one without a
  digest (older wassnet) loads with a note;
* Ctrl-C after the last step finishes the run instead of leaving it half-written.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wassnet.checkpoint import load_checkpoint, save_checkpoint, state_digest
from wassnet.cli import main
from wassnet.errors import CheckpointError, InputError, WassnetWarning
from wassnet.runtime import check_seed, resolve_device, seed_everything

TOY_GAN = [
    *("--dataset", "ring", "--arch", "dense-small", "--batch-size", "16"),
    *("--n-critic", "1", "--latent-dim", "2", "--generator-width", "8"),
    *("--width", "8", "--iters", "2", "--eval-samples", "32", "--quiet"),
]


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line(result, code: int, *fragments: str) -> str:
    """The output is one line ``Error: ...`` (``Note:`` lines aside) with exit ``code``."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("Note")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("clouds")
    rng = np.random.default_rng(0)
    np.save(folder / "a.npy", rng.random((30, 2)))
    np.save(folder / "b.npy", rng.random((20, 2)))
    return folder / "a.npy", folder / "b.npy"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    out = tmp_path_factory.mktemp("gan") / "run"
    result = _run("gan", "train", "--out", out, "--steps", "2", *TOY_GAN)
    assert result.exit_code == 0, result.output
    return out


# --------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999999", str(2**63), "1.5"])
@pytest.mark.parametrize("command", ["estimate", "bound", "gan train", "classify train"])
def test_seeds_outside_the_range_are_usage_errors(command, seed, clouds, tmp_path):
    args = {
        "estimate": ["estimate", *clouds],
        "bound": ["bound"],
        "gan train": ["gan", "train", "--out", tmp_path / "g"],
        "classify train": ["classify", "train", "--out", tmp_path / "c"],
    }[command]
    _one_line(_run(*args, "--seed", seed), 2, "--seed")
    assert not (tmp_path / "g").exists() and not (tmp_path / "c").exists()


def test_the_largest_seed_works_and_the_api_refuses_what_the_cli_does(clouds):
    result = _run("estimate", *clouds, "--target", "sample", "--seed", str(2**63 - 1), "--json")
    assert result.exit_code == 0, result.output
    seed_everything(2**63 - 1)
    for bad in (-1, 2**63, 10**23):
        with pytest.raises(InputError, match="seed"):
            check_seed(bad)
        with pytest.raises(InputError, match="seed"):
            seed_everything(bad)
    from wassnet import estimate_w1

    with pytest.raises(InputError, match="seed"):
        estimate_w1(np.zeros((3, 2)), np.ones((3, 2)), target="sample", seed=-1)


# --------------------------------------------------------------------------- devices


GPU_COMMANDS = {
    "estimate": lambda c, t, r: ["estimate", *c],
    "gan train": lambda c, t, r: ["gan", "train", "--out", t / "g", *TOY_GAN],
    "gan sample": lambda c, t, r: ["gan", "sample", "--checkpoint", r, "--out", t / "s.png"],
    "gan fid": lambda c, t, r: ["gan", "fid", "--checkpoint", r],
    "classify train": lambda c, t, r: ["classify", "train", "--out", t / "c"],
    "classify certify": lambda c, t, r: ["classify", "certify", "--checkpoint", t / "x.pt"],
}


@pytest.mark.parametrize("command", list(GPU_COMMANDS))
@pytest.mark.parametrize("device", ["mps", "cuda", "cuda:7"])
def test_a_missing_gpu_is_one_line_before_any_work(command, device, clouds, toy_run, tmp_path):
    if (device == "mps" and torch.backends.mps.is_available()) or (
        device.startswith("cuda") and torch.cuda.device_count() > 7
    ):
        pytest.skip("this machine has that device")
    if device.startswith("cuda") and torch.cuda.is_available():
        device = "cuda:7"
    args = GPU_COMMANDS[command](clouds, tmp_path, toy_run)
    _one_line(_run(*args, "--device", device), 1, repr(device))
    assert not (tmp_path / "g").exists() and not (tmp_path / "c").exists()
    with pytest.raises(InputError, match="requested"):
        resolve_device(device)


# --------------------------------------------------------------------------- sizes


def test_a_network_too_large_for_the_machine_is_refused_before_it_is_built():
    line = _one_line(
        _run("bound", "--arch", "dense", "--input-shape", "100000,100000"), 1, "memory"
    )
    assert "GiB" in line


def test_too_many_samples_are_refused_before_they_are_drawn(toy_run, tmp_path):
    result = _run("gan", "sample", "--checkpoint", toy_run, "--n", "99999999999999",
                  "--out", tmp_path / "s.npy")  # fmt: skip
    _one_line(result, 1, "memory")
    assert not (tmp_path / "s.npy").exists()


# --------------------------------------------------------------------------- full disk


def _limited(args: list[str], max_bytes: int, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m wassnet ARGS`` with a file size limit (what a full disk does to writes)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "wassnet", *map(str, args)],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def _single_error_line(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_a_full_disk_keeps_the_last_checkpoint_and_says_so(toy_run, tmp_path):
    run = tmp_path / "run"
    _copy_run(toy_run, run)
    before = load_checkpoint(run / "checkpoint.pt", kind="gan")
    size = (run / "checkpoint.pt").stat().st_size
    proc = _limited(["gan", "train", "--out", run, "--steps", "6", *TOY_GAN], size // 2, tmp_path)
    _single_error_line(proc, "checkpoint", "kept")
    after = load_checkpoint(run / "checkpoint.pt", kind="gan")  # intact, digest verified
    assert after["step"] == before["step"] == 2
    assert not list(run.glob(".*.tmp"))  # no half-written file left behind


def test_a_full_disk_during_export_is_one_line_not_an_abort(tmp_path):
    from wassnet.certify import TrainConfig, train_classifier

    x = torch.rand(32, 1, 4, 4)
    y = torch.arange(32) % 3
    config = TrainConfig(arch="dense-small", epochs=1, batch_size=16, iters=2)
    train_classifier(config, tmp_path / "c", data=(x, y), device="cpu", progress=False)
    out = tmp_path / "model.pt2"
    proc = _limited(
        ["classify", "export", "--checkpoint", tmp_path / "c" / "checkpoint.pt", "--out", out],
        4096,
        tmp_path,
    )
    line = _single_error_line(proc, str(out), "nothing was written")
    assert "partial" not in line and not out.exists()  # no internal temp name
    assert not list(tmp_path.glob(".*.tmp"))


def _copy_run(source: Path, target: Path) -> None:
    target.mkdir()
    for path in source.iterdir():
        if path.is_file():
            (target / path.name).write_bytes(path.read_bytes())


# --------------------------------------------------------------------------- old spellings


def test_the_old_critic_option_is_its_arch_and_constraint(toy_run, tmp_path):
    run = tmp_path / "run"
    _copy_run(toy_run, run)  # an orthogonal run: --critic relu-dense asks for 'none'
    toy = [a for a in TOY_GAN if a not in ("--arch", "dense-small")]
    result = _run("gan", "train", "--out", run, "--steps", "3", "--critic", "relu-dense",
                  "--gp", "10", *toy)  # fmt: skip
    _one_line(result, 1, "constraint")
    new = _run("gan", "train", "--out", run, "--steps", "3", "--arch", "dense-small",
               "--constraint", "none", "--gp", "10", *toy)  # fmt: skip
    assert new.output == result.output  # exactly as the new spelling
    clash = _run("gan", "train", "--out", tmp_path / "x", "--critic", "relu-dense",
                 "--arch", "dense", "--constraint", "orthogonal")  # fmt: skip
    _one_line(clash, 2, "--critic relu-dense", "--arch")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "old"),
    [
        (["classify", "train", "--limit", "5", "--train-limit", "6"], "--train-limit"),
        (["gan", "train", "--width", "8", "--critic-width", "9"], "--critic-width"),
        (["gan", "train", "--iters", "2", "--bjorck-iters", "3"], "--bjorck-iters"),
    ],
)
def test_an_old_spelling_beside_its_new_one_is_a_usage_error(args, old, tmp_path):
    _one_line(_run(*args, "--out", tmp_path / "r"), 2, old)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- --out


@pytest.mark.parametrize("command", [["gan", "train"], ["classify", "train"]])
@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_run_folder_is_refused(command, out, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_line(_run(*command, "--out", out), 2, "--out")
    assert list(tmp_path.iterdir()) == []


def test_a_run_folder_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    _one_line(_run("gan", "train", "--out", tmp_path / "f" / "run"), 2, "which is a file")


# --------------------------------------------------------------------------- usage, plots


@pytest.mark.parametrize(
    "args", [["estimate", "--bogus"], ["--bogus"], ["estimate", "a.npy"], ["gan", "train"]]
)
def test_usage_errors_take_one_line(args):
    line = _one_line(_run(*args), 2)
    assert "--help" in line


def test_an_unwritable_plot_folder_is_refused_before_the_work(clouds):
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc (a folder nothing can be written into)")
    _one_line(_run("estimate", *clouds, "--plot", "/proc/w1.png"), 2, "--plot", "cannot write")


def test_numbers_in_messages_are_plain(tmp_path):
    a = np.array([[2**53 + 1, 0], [0, 1]], dtype=np.int64)
    np.save(tmp_path / "a.npy", a)
    line = _one_line(_run("estimate", tmp_path / "a.npy", tmp_path / "a.npy"), 1, "2^53")
    assert "np." not in line and str(2**53 + 1) in line


# --------------------------------------------------------------------------- checkpoints


def _damage_largest_tensor(source: Path, target: Path) -> None:
    """Overwrite 16 bytes inside the largest tensor record of a torch zip, in place."""
    with zipfile.ZipFile(source) as archive:
        info = max(
            (archive.getinfo(n) for n in archive.namelist() if "/data/" in n),
            key=lambda i: i.file_size,
        )
    raw = bytearray(source.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    raw[start : start + 16] = bytes(range(1, 17))
    target.write_bytes(bytes(raw))


def test_damaged_tensor_bytes_are_refused_with_one_line(toy_run, tmp_path):
    bad = tmp_path / "damaged.pt"
    _damage_largest_tensor(toy_run / "checkpoint.pt", bad)
    torch.load(bad, weights_only=True)  # torch itself does not notice
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(bad, kind="gan")
    result = _run("gan", "sample", "--checkpoint", bad, "--out", tmp_path / "s.png")
    _one_line(result, 1, str(bad), "corrupted")


def test_the_digest_covers_every_value_and_old_checkpoints_load_with_a_note(tmp_path):
    state = {"kind": "t", "w": torch.arange(6.0), "meta": {"step": 3, "names": ["a", "b"]}}
    path = save_checkpoint(state, tmp_path / "c.pt")
    assert "digest" not in state  # the caller's dict is left alone
    loaded = load_checkpoint(path)
    assert "digest" not in loaded and torch.equal(loaded["w"], state["w"])
    base = state_digest(state)
    for changed in (
        {**state, "w": torch.arange(6.0) + 1e-7},
        {**state, "w": torch.arange(6.0).double()},
        {**state, "meta": {"step": 4, "names": ["a", "b"]}},
        {**state, "meta": {"step": 3, "names": ["a", "c"]}},
    ):
        assert state_digest(changed) != base
    raw = torch.load(path, weights_only=True)
    raw["meta"]["step"] = 4  # edited by hand: refused
    torch.save(raw, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path / "edited.pt")
    raw.pop("digest")  # as wassnet 0.2 wrote it
    torch.save(raw, tmp_path / "old.pt")
    with pytest.warns(WassnetWarning, match="no integrity digest"):
        assert load_checkpoint(tmp_path / "old.pt")["meta"]["step"] == 4


def test_a_constant_network_certifies_at_every_radius_without_a_misleading_error(tmp_path):
    """A classifier whose first weight is zero (what overwritten bytes once gave) is a
    constant: its bound is (about) 0, its radii beyond any box; the attack runs at the
    box diameter instead of failing with a message about --eps."""
    from wassnet.certify import TrainConfig, train_classifier
    from wassnet.certify.evaluation import AttackOptions, evaluate
    from wassnet.certify.model import load_classifier

    x = torch.rand(32, 1, 4, 4)
    y = torch.zeros(32, dtype=torch.long)
    config = TrainConfig(arch="dense-small", epochs=1, batch_size=16, iters=2)
    train_classifier(config, tmp_path / "c", data=(x, y), device="cpu", progress=False)
    loaded = load_classifier(tmp_path / "c" / "checkpoint.pt")
    with torch.no_grad():
        for module in loaded.model.modules():
            if isinstance(module, torch.nn.Linear):
                module.parametrizations.weight.original.mul_(0.0)
                break
    ev = evaluate(loaded, (x, y), [0.5, 100.0], attack=AttackOptions(steps=3, limit=8))
    assert ev.lipschitz.bound < 1e-300  # a constant (up to a denormal or two)
    assert ev.attack is not None and ev.attack.attacked == 8 and ev.attack.broken == 0


# --------------------------------------------------------------------------- finishing


def test_continuing_a_finished_run_prints_no_nan(toy_run, tmp_path):
    run = tmp_path / "run"
    _copy_run(toy_run, run)
    result = _run("gan", "train", "--out", run, "--steps", "2", *TOY_GAN)
    assert result.exit_code == 0, result.output
    assert "nan" not in result.output and "no step trained in this call" in result.output


@pytest.mark.parametrize(("steps", "finished"), [(1, True), (3, False)])
def test_ctrl_c_at_the_last_step_finishes_the_run(steps, finished, tmp_path, monkeypatch):
    """Ctrl-C pressed during the last step: the run is complete, so it finishes
    (summary, curves) instead of stopping with exit 130; earlier, it stops."""
    import contextlib

    from wassnet.gan.trainer import GANConfig, train_gan
    from wassnet.runs import RunFolder

    @contextlib.contextmanager
    def pressed(self):
        self.interrupted = True  # as if Ctrl-C came during the first step
        yield

    monkeypatch.setattr(RunFolder, "interrupts", pressed)
    config = GANConfig(dataset="ring", arch="dense-small", steps=steps, batch_size=16,
                       n_critic=1, latent_dim=2, generator_width=8, width=8, iters=2,
                       eval_samples=32)  # fmt: skip
    out = tmp_path / "run"
    if finished:
        result = train_gan(config, out, progress=False)
        assert result.steps == 1 and (out / "summary.json").exists()
        assert json.loads((out / "summary.json").read_text())["steps"] == 1
    else:
        with pytest.raises(KeyboardInterrupt, match="step 1"):
            train_gan(config, out, progress=False)
        assert not (out / "summary.json").exists()
        assert load_checkpoint(out / "checkpoint.pt", kind="gan")["step"] == 1


def test_a_short_run_certifies_as_many_test_images_as_it_trained_on(mnist_root, tmp_path):
    result = _run("classify", "train", "--arch", "dense-small", "--epochs", "1", "--limit", "64",
                  "--iters", "2", "--data-root", mnist_root, "--out", tmp_path / "r",
                  "--quiet", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["test"]["n"] == 64


def test_the_attack_check_counts_only_real_counterexamples():
    """A flip found beyond the certified radius (float32 cannot place a perturbation to
    1e-4 of a tiny radius) is not a broken certificate; one within it is."""
    from wassnet.certify.attack import _confirmed_breaks

    model = torch.nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0], [-1.0]]))  # class 0 iff x > 0
    x = torch.tensor([[1e-3]])
    y = torch.tensor([0])
    radius = torch.tensor([1e-3], dtype=torch.float64)
    beyond = torch.tensor([[-1e-5]])  # flips the class at distance 1.01e-3 > radius
    within = torch.tensor([[-1e-5]])
    assert _confirmed_breaks(model, x, beyond, y, radius, 1.0, math.inf) == 0
    wider = torch.tensor([2e-3], dtype=torch.float64)
    assert _confirmed_breaks(model, x, within, y, wider, 1.0, math.inf) == 1
