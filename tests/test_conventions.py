"""What every job shares: run folders, errors and exit codes, option types, the registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from wassnet.cli import main
from wassnet.clitools import Device, ErrorLineGroup, Finite
from wassnet.errors import (
    CheckpointError,
    InputError,
    InputTypeError,
    RunFolderError,
    TrainingError,
    WassnetError,
)
from wassnet.runs import RunFolder

# ------------------------------------------------------------------------ run folders


def test_run_folder_is_exclusive_and_released(tmp_path: Path) -> None:
    with RunFolder(tmp_path / "run") as first:
        assert first.path.is_dir()
        with pytest.raises(RunFolderError, match="in use by process") as info:
            RunFolder(tmp_path / "run").__enter__()
        assert str(first.path) in str(info.value)
    with RunFolder(tmp_path / "run"):  # released on exit
        pass


def test_run_folder_cleans_stale_temp_files_only(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".checkpoint.pt.abc123.tmp").write_bytes(b"torn")
    (folder / ".model.pt2.77.partial.pt2").write_bytes(b"torn")
    (folder / "notes.tmp").write_text("the user's file")
    (folder / "checkpoint.pt").write_bytes(b"kept")
    with RunFolder(folder):
        pass
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "checkpoint.pt", "notes.tmp"]


def test_run_folder_refuses_a_file_and_unlocked_saves(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        RunFolder(tmp_path / "file").__enter__()
    with pytest.raises(RunFolderError, match="not locked"):
        RunFolder(tmp_path / "unlocked").save({"kind": "x"})


# ------------------------------------------------------------------- errors, exit codes


def test_error_hierarchy_keeps_builtin_types() -> None:
    for error, builtin in [
        (InputError, ValueError),
        (InputTypeError, TypeError),
        (CheckpointError, ValueError),
        (RunFolderError, RuntimeError),
        (TrainingError, RuntimeError),
    ]:
        assert issubclass(error, WassnetError) and issubclass(error, builtin)


def _group_raising(exc: BaseException) -> click.Group:
    @click.group(cls=ErrorLineGroup)
    def group() -> None:
        pass

    @group.command()
    def go() -> None:
        raise exc

    return group


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (InputError("bad input x"), 1, "Error: bad input x"),
        (FileNotFoundError("no such file: y"), 1, "Error: no such file: y"),
        (KeyboardInterrupt("interrupted: checkpoint saved at step 3"), 130, "step 3"),
    ],
)
def test_user_errors_are_one_line(exc: BaseException, code: int, line: str) -> None:
    result = CliRunner().invoke(_group_raising(exc), ["go"])
    assert result.exit_code == code
    assert result.output.strip() == line or line in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("exc", [ValueError("numpy said so"), ZeroDivisionError(), KeyError("k")])
def test_bugs_keep_their_traceback(exc: BaseException) -> None:
    """A ValueError that wassnet did not raise on purpose is a bug: not hidden."""
    result = CliRunner().invoke(_group_raising(exc), ["go"])
    assert result.exception is exc  # propagated (the real CLI prints its traceback)


def test_finite_and_device_types() -> None:
    positive = Finite(0, open_low=True)
    assert positive.convert("2.5", None, None) == 2.5
    for bad in ("nan", "inf", "-inf", "0", "-1", "x"):
        with pytest.raises(click.BadParameter):
            positive.convert(bad, None, None)
    assert Finite(0).convert("0", None, None) == 0.0
    assert Finite(0, 1).convert("1", None, None) == 1.0
    with pytest.raises(click.BadParameter):
        Finite(0, 1).convert("1.5", None, None)
    for bad in ("1", "nan", "1.5"):
        with pytest.raises(click.BadParameter):
            Finite(0.5, 1, open_high=True).convert(bad, None, None)
    device = Device()
    for good in ("cpu", "cuda", "cuda:1", "CUDA:0", "mps"):
        assert device.convert(good, None, None) == good.lower()
    for bad in ("meta", "tpu", "cuda:x", "cpu:0:1", ""):
        with pytest.raises(click.BadParameter):
            device.convert(bad, None, None)


# --------------------------------------------------------------------------- registry


def test_help_does_not_import_torch() -> None:
    """`wassnet --help` reads names from the torch-free registry (speed: scripts/bench_cli.py)."""
    code = (
        "import sys; from click.testing import CliRunner; import wassnet.cli as c; "
        "r = CliRunner().invoke(c.main, ['--help']); assert r.exit_code == 0; "
        "[CliRunner().invoke(c.main, [g, '--help']) for g in ('estimate', 'gan', 'classify')]; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ot', 'scipy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_one_arch_registry_for_every_job() -> None:
    from wassnet.critics import PRESETS
    from wassnet.names import ARCHS

    assert set(PRESETS) == set(ARCHS)
    for command in (["bound"], ["gan", "train"], ["classify", "train"]):
        text = CliRunner().invoke(main, [*command, "--help"]).output
        for name in ARCHS:
            assert name in text, (command, name)


@pytest.mark.parametrize(
    "command",
    [
        ["estimate"],
        ["gan", "train"],
        ["gan", "fid"],
        ["classify", "train"],
        ["classify", "certify"],
    ],
)
def test_shared_options_are_spelled_alike(command: list[str]) -> None:
    text = CliRunner().invoke(main, [*command, "--help"]).output
    for option in ("--device", "--threads", "--json", "--quiet", "--seed"):
        assert option in text, (command, option)
    for old in ("--attack-n", "--train-limit", "--data-limit", "--bjorck-iters", "--critic-width"):
        assert old not in text, (command, old)


def test_every_compiled_source_ships_in_the_package() -> None:
    """A non-editable install must carry every C source the package compiles on first
    use (``_simplex.c`` was once left out: a wheel silently lost the warm start)."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["wassnet.ot"]
    for source in (root / "wassnet" / "ot").glob("*.c"):
        assert any(fnmatch.fnmatch(source.name, pattern) for pattern in patterns), source.name
