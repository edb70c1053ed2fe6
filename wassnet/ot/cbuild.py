"""Compile wassnet's small C sources on first use, cache the shared library, load it.

Each source is compiled with the system C compiler (``$CC``, else ``cc``, else
``gcc``) into ``$WASSNET_CACHE``, else ``$XDG_CACHE_HOME/wassnet``, else
``~/.cache/wassnet`` (a temporary folder when that is not writable). The file name
holds a digest of the source, the flags and, for flags that tune to the build machine
(``-march=native``), this machine's CPU features: a cache folder shared by different
machines never serves one a library built for another. The first flag set that
compiles is used; ``WASSNET_NO_NATIVE=1`` disables every compiled library (callers
fall back on their pure-Python paths).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["NativeLibrary", "cache_dir", "load_library", "native_disabled"]


def native_disabled() -> bool:
    """Whether ``WASSNET_NO_NATIVE`` asks for the pure-Python fallbacks."""
    return bool(os.environ.get("WASSNET_NO_NATIVE"))


def cache_dir() -> Path:
    """Where compiled libraries are kept."""
    if os.environ.get("WASSNET_CACHE"):
        return Path(os.environ["WASSNET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wassnet"


def _machine() -> str:
    """The CPU features a ``-march=native`` build depends on (best effort)."""
    features = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("flags", "Features", "model name")):
                    features += line
    except OSError:
        pass
    return features


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


def load_library(source: Path, flag_sets: Sequence[Sequence[str]]) -> ctypes.CDLL:
    """The compiled ``source``, built with the first of ``flag_sets`` that compiles.

    Raises:
        OSError or subprocess.SubprocessError: no flag set compiles (no compiler).
    """
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / "wassnet-cache"
        folder.mkdir(parents=True, exist_ok=True)
    code = source.read_bytes()
    error: Exception | None = None
    for flags in flag_sets:
        key = code + " ".join(flags).encode()
        if any("native" in flag for flag in flags):
            key += _machine().encode()
        digest = hashlib.sha256(key).hexdigest()[:16]
        target = folder / f"{source.stem.lstrip('_')}-{digest}.so"
        try:
            if not target.exists():
                _build(source, flags, target)
            return ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError) as exc:
            error = exc
    assert error is not None
    raise error


class NativeLibrary:
    """One C source, compiled and loaded on first use, at most once per process.

    :meth:`get` returns the library with its functions declared by ``declare``, or
    ``None`` (then :attr:`failed` says why: no compiler, or ``WASSNET_NO_NATIVE``);
    ``on_failure`` is called with that reason when compiling fails (e.g. to warn).
    Tests reset :attr:`lib` and :attr:`failed` to force either outcome.
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
