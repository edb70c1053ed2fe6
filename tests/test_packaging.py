"""The compiled code built at install time (setup.py), how it is loaded (cbuild), and
``wassnet info`` / ``--version`` that report it.

The wheel itself (built, installed into a fresh environment, smoke-tested with every
compiled path required) is checked by ``.ci/wheel``: too slow for the test suite.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from click.testing import CliRunner

import wassnet.nn.linf as linf
import wassnet.ot.native as native
import wassnet.ot.native_tiles as native_tiles
import wassnet.ot.simplex as simplex
from wassnet import __version__
from wassnet.cli import main
from wassnet.ot import cbuild

ROOT = Path(__file__).resolve().parent.parent
CALL_SITES = {
    "wassnet/ot/_simplex.c": simplex._NATIVE,
    "wassnet/ot/_assign.c": native._NATIVE,
    "wassnet/ot/_tiles.c": native_tiles._NATIVE,
    "wassnet/nn/_linf.c": linf._NATIVE,
}
COMPILER = shutil.which("cc") or shutil.which("gcc")
needs_compiler = pytest.mark.skipif(
    COMPILER is None or sys.platform != "linux", reason="needs a C compiler on Linux"
)


def load_setup():
    """setup.py as a module (its ``setup()`` call only runs as ``__main__``)."""
    spec = importlib.util.spec_from_file_location("wassnet_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_setup_builds_every_c_source_with_its_call_sites_flags(monkeypatch):
    setup = load_setup()
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "wassnet").rglob("*.c")}
    assert set(setup.FLAG_SETS) == sources == set(CALL_SITES)
    for source, library in CALL_SITES.items():
        assert library.source == ROOT / source
        assert setup.FLAG_SETS[source] == [list(flags) for flags in library.flag_sets]
    assert [e.name for e in setup.extensions()] == [
        "wassnet.ot._simplex", "wassnet.ot._assign", "wassnet.ot._tiles", "wassnet.nn._linf"
    ]  # fmt: skip
    monkeypatch.setenv("WASSNET_PORTABLE_BUILD", "1")
    assert setup.flag_sets("wassnet/ot/_tiles.c") == [setup.FLAG_SETS["wassnet/ot/_tiles.c"][1]]
    assert setup.flag_sets("wassnet/ot/_simplex.c") == [["-O3"]]


def install_fake(source: Path, flags: list[str], key: str) -> Path:
    """Compile ``source`` as setup.py would, stamped with ``key``, beside it."""
    target = source.with_name(source.stem + importlib.machinery.EXTENSION_SUFFIXES[0])
    include = sysconfig.get_paths()["include"]
    stamp, out = f'-DWASSNET_BUILD_KEY="{key}"', str(target)
    subprocess.run(
        [COMPILER, *flags, "-shared", "-fPIC", stamp, f"-I{include}", "-o", out, str(source)],
        check=True,
        capture_output=True,
    )
    return target


@needs_compiler
def test_the_installed_library_is_loaded_only_when_its_key_matches(monkeypatch, tmp_path):
    monkeypatch.setenv("WASSNET_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "_assign.c"
    shutil.copy(ROOT / "wassnet/ot/_assign.c", source)
    flags = ["-O1", "-march=native"]
    installed = install_fake(source, flags, cbuild.build_key(source, flags))
    assert cbuild.installed_library(source) == installed
    lib = cbuild.load_library(source, [flags])
    assert Path(lib._name) == installed and hasattr(lib, "sparse_assign")
    assert not (tmp_path / "cache").exists()  # no compiler was run
    # the same file tuned to another CPU is not loaded: compiled at first use instead
    monkeypatch.setattr(cbuild, "_machine", lambda: "another cpu")
    assert Path(cbuild.load_library(source, [flags])._name).parent == tmp_path / "cache"
    monkeypatch.undo()
    monkeypatch.setenv("WASSNET_CACHE", str(tmp_path / "cache"))
    # a source edited since the install: its new text is compiled
    source.write_text(source.read_text() + "\n/* edited */\n")
    assert Path(cbuild.load_library(source, [flags])._name).parent == tmp_path / "cache"
    # an installed library but no compiler and a foreign key: the error of the compiler
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(OSError):
        cbuild.load_library(source, [["-O2"]])


@needs_compiler
def test_runtime_build_forced_ignores_the_installed_library(monkeypatch, tmp_path):
    monkeypatch.setenv("WASSNET_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "_simplex.c"
    shutil.copy(ROOT / "wassnet/ot/_simplex.c", source)
    install_fake(source, ["-O1"], cbuild.build_key(source, ["-O1"]))
    monkeypatch.setenv("WASSNET_RUNTIME_BUILD", "1")
    lib = cbuild.load_library(source, [["-O1"]])
    assert Path(lib._name).parent == tmp_path / "cache"
    assert hasattr(lib, "transport_simplex")


def fresh_state(monkeypatch) -> None:
    """Forget what each compiled path loaded, for this test only."""
    for library in CALL_SITES.values():
        monkeypatch.setattr(library, "lib", None)
        monkeypatch.setattr(library, "failed", None)


def test_info_lists_every_compiled_path_and_where_it_came_from(monkeypatch):
    fresh_state(monkeypatch)
    result = CliRunner().invoke(main, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["version"] == __version__
    assert [p["name"] for p in report["compiled"]] == ["assign", "linf", "simplex", "tiles"]
    for entry in report["compiled"]:
        library = cbuild._REGISTRY[entry["name"]]
        assert entry["active"] == (library.lib is not None)
        if entry["active"]:
            assert entry["path"] == library.lib._name and Path(entry["path"]).is_file()
            assert entry["origin"] in (cbuild.INSTALLED, cbuild.FIRST_USE)
        else:
            assert entry["why"] == library.failed
    text = CliRunner().invoke(main, ["info"]).output
    assert text.startswith(f"wassnet {__version__}") and all(n in text for n in cbuild._REGISTRY)


def test_info_without_native_says_why_and_require_native_fails(monkeypatch):
    fresh_state(monkeypatch)
    monkeypatch.setenv("WASSNET_NO_NATIVE", "1")
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    assert result.output.count("inactive") == 4
    assert result.output.count("WASSNET_NO_NATIVE is set") == 4
    result = CliRunner().invoke(main, ["info", "--require-native"])
    assert result.exit_code == 1
    assert "Error: compiled paths not active from the install: assign, linf, simplex, tiles" in (
        result.output
    )
    assert "Traceback" not in result.output


def test_require_native_passes_when_everything_was_built_at_install(monkeypatch):
    fresh_state(monkeypatch)
    monkeypatch.delenv("WASSNET_NO_NATIVE", raising=False)
    monkeypatch.delenv("WASSNET_RUNTIME_BUILD", raising=False)
    monkeypatch.setenv("CC", "/no/such/compiler")  # nothing may be compiled now
    if any(cbuild.installed_library(lib.source) is None for lib in CALL_SITES.values()):
        pytest.skip("a source checkout that was not built (pip install -e .)")
    result = CliRunner().invoke(main, ["info", "--require-native"])
    assert result.exit_code == 0, result.output
    assert result.output.count("active (installed)") == 4


def test_version_option():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"wassnet, version {__version__}"
