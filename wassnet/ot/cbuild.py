"""Load wassnet's small C sources: built at install time, else compiled on first use.

**Install time.** ``setup.py`` compiles each C source (``wassnet/ot/_simplex.c``,
``_assign.c``, ``_tiles.c``, ``wassnet/nn/_linf.c``) into a file beside it named like an
extension module (``_simplex`` + one of :data:`importlib.machinery.EXTENSION_SUFFIXES`,
e.g. ``_simplex.cpython-311-x86_64-linux-gnu.so``), shipped in the wheel, and stamps it
with :func:`build_key` of the source, the flags and, for ``-march=native``, the CPU.
:func:`load_library` loads that file with ctypes when its key is the key of one of the
call site's flag sets *on this machine*: then no compiler is needed. A key that matches
none (the source edited since, or a library tuned to another CPU) is never loaded.

**First use (the fallback).** Without such a file (a source checkout that was never
``pip install``-ed, a stale or foreign one, or ``WASSNET_RUNTIME_BUILD=1``), the source
is compiled as before with the system C compiler (``$CC``, else ``cc``, else ``gcc``)
into ``$WASSNET_CACHE``, else ``$XDG_CACHE_HOME/wassnet``, else ``~/.cache/wassnet`` (a
temporary folder when that is not writable), under a name holding :func:`build_key`: a
cache folder shared by different machines never serves one a library built for another.
The first flag set that compiles is used. An installed wheel never gets here on the
machine it was built for, nor anywhere when built with ``WASSNET_PORTABLE_BUILD=1``.

``WASSNET_NO_NATIVE=1`` disables every compiled library (callers fall back on their
pure-Python paths). ``wassnet info`` prints which library each path loaded, from where.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "NativeLibrary",
    "NativeReport",
    "NativeStatus",
    "build_key",
    "cache_dir",
    "installed_library",
    "load_library",
    "native_disabled",
    "native_report",
    "runtime_build_forced",
]

#: The C function every library built by setup.py exports: its :func:`build_key`.
KEY_SYMBOL = "wassnet_build_key"
INSTALLED, FIRST_USE = "installed", "built at first use"


def native_disabled() -> bool:
    """Whether ``WASSNET_NO_NATIVE`` asks for the pure-Python fallbacks."""
    return bool(os.environ.get("WASSNET_NO_NATIVE"))


def runtime_build_forced() -> bool:
    """Whether ``WASSNET_RUNTIME_BUILD`` asks to ignore the libraries built at install
    time and compile at first use (development: other compilers or flags)."""
    return bool(os.environ.get("WASSNET_RUNTIME_BUILD"))


def cache_dir() -> Path:
    """Where libraries compiled at first use are kept."""
    if os.environ.get("WASSNET_CACHE"):
        return Path(os.environ["WASSNET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wassnet"


def _machine() -> str:
    """The CPU features a ``-march=native`` build depends on (best effort; the distinct
    lines of ``/proc/cpuinfo``, so the core count does not matter)."""
    features = platform.machine() + platform.processor()
    lines: set[str] = set()
    try:
        with open("/proc/cpuinfo") as info:
            lines = {ln for ln in info if ln.startswith(("flags", "Features", "model name"))}
    except OSError:
        pass
    return features + "".join(sorted(lines))


def build_key(source: Path, flags: Sequence[str]) -> str:
    """16 hex digits naming ``source``'s bytes compiled with ``flags`` (and this CPU's
    features when a flag tunes to the build machine): equal keys, same library."""
    key = source.read_bytes() + " ".join(flags).encode()
    if any("native" in flag for flag in flags):
        key += _machine().encode()
    return hashlib.sha256(key).hexdigest()[:16]


def installed_library(source: Path) -> Path | None:
    """The file setup.py built from ``source`` beside it, if there is one."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = source.with_name(source.stem + suffix)
        if path.is_file():
            return path
    return None


def _installed(source: Path, flag_sets: Sequence[Sequence[str]]) -> tuple[Path | None, str]:
    """The installed library to load, or ``None`` and why none is."""
    if runtime_build_forced():
        return None, "WASSNET_RUNTIME_BUILD is set"
    path = installed_library(source)
    if path is None:
        return None, "no library built at install time (a source checkout: pip install -e .)"
    try:
        lib = ctypes.CDLL(str(path))  # runs no code of ours: the key is checked first
        getattr(lib, KEY_SYMBOL).restype = ctypes.c_char_p
        key = getattr(lib, KEY_SYMBOL)().decode()
    except (OSError, AttributeError) as exc:
        return None, f"{path.name} does not load ({type(exc).__name__}: {exc})"
    if key not in {build_key(source, flags) for flags in flag_sets}:
        return None, f"{path.name} was built from another source, flags or CPU"
    return path, ""


def _build(source: Path, flags: Sequence[str], target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler (cc, gcc) on PATH")
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run(
            [compiler, *flags, "-shared", "-fPIC", "-o", tmp, str(source), "-lm"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.replace(tmp, target)  # atomic: concurrent processes never load half a file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _built_at_first_use(source: Path, flag_sets: Sequence[Sequence[str]]) -> ctypes.CDLL:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / "wassnet-cache"
        folder.mkdir(parents=True, exist_ok=True)
    error: Exception | None = None
    for flags in flag_sets:
        target = folder / f"{source.stem.lstrip('_')}-{build_key(source, flags)}.so"
        try:
            if not target.exists():
                _build(source, flags, target)
            return ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError) as exc:
            error = exc
    assert error is not None
    raise error


def load_library(source: Path, flag_sets: Sequence[Sequence[str]]) -> ctypes.CDLL:
    """The compiled ``source``: the library built at install time when its key matches
    one of ``flag_sets`` here, else compiled now with the first of ``flag_sets`` that
    compiles (cached).

    Raises:
        OSError or subprocess.SubprocessError: no installed library fits and no flag set
            compiles (no compiler).
    """
    path, _ = _installed(source, flag_sets)
    if path is not None:
        return ctypes.CDLL(str(path))
    return _built_at_first_use(source, flag_sets)


@dataclass(frozen=True)
class NativeStatus:
    """One compiled path: ``active`` with the ``path`` it was loaded from and its
    ``origin`` (:data:`INSTALLED` or :data:`FIRST_USE`), or not, and ``why``: why it is
    inactive, or why a library built at first use is not the installed one."""

    name: str
    active: bool
    origin: str | None
    path: str | None
    why: str


_REGISTRY: dict[str, NativeLibrary] = {}


class NativeLibrary:
    """One C source, loaded (or compiled) on first use, at most once per process.

    :meth:`get` returns the library with its functions declared by ``declare``, or
    ``None`` (then :attr:`failed` says why: no compiler, or ``WASSNET_NO_NATIVE``);
    ``on_failure`` is called with that reason when compiling fails (e.g. to warn).
    Tests reset :attr:`lib` and :attr:`failed` to force either outcome. Every instance
    is listed by :func:`native_report` under its source's stem (``_tiles.c``: tiles).
    """

    def __init__(
        self,
        source: Path,
        flag_sets: Sequence[Sequence[str]],
        declare: Callable[[ctypes.CDLL], None],
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.source, self.flag_sets = source, flag_sets
        self.declare, self.on_failure = declare, on_failure
        self.lib: ctypes.CDLL | None = None
        self.failed: str | None = None
        self.name = source.stem.lstrip("_")
        _REGISTRY[self.name] = self

    def get(self) -> ctypes.CDLL | None:
        """The loaded library, or ``None`` where it cannot be built (see :attr:`failed`)."""
        if self.lib is not None or self.failed is not None:
            return self.lib
        if native_disabled():
            self.failed = "WASSNET_NO_NATIVE is set"
            return None
        try:
            lib = load_library(self.source, self.flag_sets)
        except (OSError, subprocess.SubprocessError) as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
            if self.on_failure is not None:
                self.on_failure(self.failed)
            return None
        self.declare(lib)
        self.lib = lib
        return lib

    def status(self) -> NativeStatus:
        """Load the library (as a caller would) and say where from, or why not."""
        lib = self.get()
        if lib is None:
            return NativeStatus(self.name, False, None, None, str(self.failed))
        path = Path(lib._name)
        if path == installed_library(self.source):
            return NativeStatus(self.name, True, INSTALLED, str(path), "")
        _, why = _installed(self.source, self.flag_sets)
        return NativeStatus(self.name, True, FIRST_USE, str(path), why)


@dataclass(frozen=True)
class NativeReport:
    """What ``wassnet info`` prints: the version and each compiled path's status."""

    version: str
    paths: tuple[NativeStatus, ...]

    @property
    def all_installed(self) -> bool:
        """Every compiled path active, loaded from the install (no compiler was used)."""
        return all(s.active and s.origin == INSTALLED for s in self.paths)

    def to_dict(self) -> dict[str, object]:
        return {"version": self.version, "compiled": [asdict(s) for s in self.paths]}

    def summary(self) -> str:
        lines = [f"wassnet {self.version} (Python {platform.python_version()})"]
        lines.append("compiled paths:")
        for s in self.paths:
            state = f"active ({s.origin})" if s.active else "inactive"
            where = s.path or ""
            note = f"  [{s.why}]" if s.why else ""
            lines.append(f"  {s.name:<8} {state:<29} {where}{note}".rstrip())
        return "\n".join(lines)


def native_report(version: str) -> NativeReport:
    """The status of every registered compiled path (by name), loading each as its
    callers would. The modules that define them must be imported first."""
    return NativeReport(version, tuple(_REGISTRY[name].status() for name in sorted(_REGISTRY)))
