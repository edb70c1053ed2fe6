"""Build wassnet's C sources at install time, so that no compiler is needed at run time.

Why setuptools ``Extension`` (and not meson-python or scikit-build-core): the four C
files are standalone (no Python API, no other library), setuptools is already the build
backend in pyproject.toml, and a ``build_ext`` subclass of a dozen lines reproduces what
the runtime loader did (:mod:`wassnet.ot.cbuild`): try the tuned flag sets in order and
keep the first that compiles. A second build system would add a tool, not a capability.

Each source becomes a file beside it named like an extension module
(``wassnet/ot/_simplex.cpython-311-x86_64-linux-gnu.so``), shipped in the wheel and, for
``pip install -e .``, copied into the source tree. wassnet loads it with ctypes; the
only Python in it is the empty ``PyInit_<name>`` stub at the end of each C file, compiled
only here (``#ifdef WASSNET_BUILD_KEY``), with the function returning the
``cbuild.build_key`` of the source, the flags and the CPU: the loader uses the file only
when that key is the one of a flag set of its call site on the machine it runs on.

Flags: the call sites' (``_NATIVE`` in ``wassnet/ot/simplex.py``, ``native.py``,
``native_tiles.py`` and ``wassnet/nn/linf.py``; ``tests/test_packaging.py`` checks that
:data:`FLAG_SETS` is the same), so an installed library runs exactly as fast as one
compiled at first use. ``-march=native`` tunes the tiles and l-inf kernels to the build
machine: such a wheel is for this machine (elsewhere the key does not match and wassnet
compiles at first use, or falls back to Python). ``WASSNET_PORTABLE_BUILD=1`` drops the
machine-tuned flag sets: a wheel for any machine of the platform. A machine without a
compiler still installs (the extensions are optional) and runs the Python fallbacks;
``wassnet info --require-native`` says so.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
_TUNED = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-pthread"]
#: Source -> the flag sets to try in order (the first that compiles is kept).
FLAG_SETS: dict[str, list[list[str]]] = {
    "wassnet/ot/_simplex.c": [["-O3"]],
    "wassnet/ot/_assign.c": [["-O3"]],
    "wassnet/ot/_tiles.c": [[*_TUNED, "-march=native"], _TUNED],
    "wassnet/nn/_linf.c": [[*_TUNED, "-march=native"], _TUNED],
}
#: Appended to every compile: symbols visible to ctypes, and signed overflow left
#: undefined as in the runtime build (Python's own CFLAGS carry -fwrapv).
_ALWAYS = ["-fvisibility=default", "-fno-wrapv"]


def _cbuild():
    """wassnet/ot/cbuild.py (standard library only), imported without wassnet."""
    spec = importlib.util.spec_from_file_location("_wassnet_cbuild", ROOT / "wassnet/ot/cbuild.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def flag_sets(source: str) -> list[list[str]]:
    """The flag sets to try for ``source`` (machine-tuned ones dropped when portable)."""
    sets = FLAG_SETS[source]
    if os.environ.get("WASSNET_PORTABLE_BUILD"):
        sets = [flags for flags in sets if not any("native" in f for f in flags)]
    return sets


class BuildFirstThatCompiles(build_ext):
    """``build_ext`` that tries each flag set of a source in order, stamping the build key."""

    def build_extension(self, ext: Extension) -> None:
        from setuptools.errors import CCompilerError, CompileError, LinkError

        source = ext.sources[0]
        cbuild = _cbuild()
        error: Exception | None = None
        for flags in flag_sets(source):
            key = cbuild.build_key(ROOT / source, flags)
            ext.define_macros = [("WASSNET_BUILD_KEY", f'"{key}"')]
            ext.extra_compile_args = [*flags, *_ALWAYS]
            ext.extra_link_args = ["-pthread"] if "-pthread" in flags else []
            try:
                super().build_extension(ext)
                return
            except (CCompilerError, CompileError, LinkError) as exc:
                self.warn(f"{source} does not compile with {' '.join(flags)}: {exc}")
                error = exc
        assert error is not None
        raise error


def extensions() -> list[Extension]:
    """One optional extension per C source (a machine without a compiler still installs)."""
    return [
        Extension(
            source[:-2].replace("/", "."),
            sources=[source],
            libraries=["m"],
            optional=True,
        )
        for source in FLAG_SETS
    ]


if __name__ == "__main__":
    setup(ext_modules=extensions(), cmdclass={"build_ext": BuildFirstThatCompiles})
