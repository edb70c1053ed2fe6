"""Loading and validating point clouds and sample weights (``wassnet estimate A B``).

Point clouds are read from ``.npy``, ``.npz``, ``.csv`` and ``.txt`` files
(:func:`load_points`) or checked when given to the Python API as NumPy arrays, lists
or torch tensors (:func:`validate_points`). Both return the same normalized form:

* a 1-D array ``[n]``: ``n`` points on the line (callers solve this case exactly);
* a 2-D array ``[n, d]``: ``n`` points in ``R^d``. Arrays ``[n, ...]`` with more
  dimensions (e.g. images ``[n, 28, 28]``) are flattened to ``[n, prod(rest)]``, and
  a single column ``[n, 1]`` is squeezed to ``[n]`` (points on the line).

Values are float64 and C-contiguous (64-bit integers beyond ``2^53`` and
extended-precision floats that float64 cannot hold exactly are refused, never
rounded), except that a memory-mapped ``.npy`` file of
native float32/float64 stays memory-mapped (read-only, no copy of a huge file).
Every array returned is non-empty and finite.

Every problem with the user's input raises :class:`InputError`, whose message is one
line that names the file (or the argument) and says what is wrong.

The input of W1 -- two clouds and their optional weights -- is checked once, at the
boundary, into a :class:`Clouds`: :func:`load_clouds` for files (``wassnet estimate``),
:func:`resolve_clouds` for arrays (:func:`wassnet.estimate_w1`). Both run the same
checks in the same order (A, B, their dimensions, the weights of A, of B); code below
takes the :class:`Clouds` and checks nothing again.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from wassnet.errors import InputError

__all__ = [
    "Clouds",
    "InputError",
    "InputFiles",
    "check_same_dimension",
    "load_clouds",
    "load_points",
    "load_weights",
    "resolve_clouds",
    "validate_points",
    "validate_weights",
]

#: Supported file suffixes (case-insensitive).
SUPPORTED_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".csv", ".txt")
_TEXT_SUFFIXES = (".csv", ".txt")
#: ``.npy`` files larger than this are memory-mapped (:func:`load_points`).
MMAP_THRESHOLD_BYTES = 256 * 2**20
#: Elements per chunk when scanning arrays for NaN/inf (bounds the extra memory).
_CHUNK_ELEMENTS = 1 << 22
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK"


# ----------------------------------------------------------------------------- public


def load_points(
    path: str | os.PathLike[str],
    key: str | None = None,
    *,
    mmap_threshold_bytes: int = MMAP_THRESHOLD_BYTES,
) -> np.ndarray:
    """Load a point cloud from a ``.npy``, ``.npz``, ``.csv`` or ``.txt`` file.

    Args:
        path: the file; its suffix (case-insensitive) selects the format.
        key: the array to use in an ``.npz`` archive holding several arrays (optional
            when it holds one). Giving a key for any other format is an error.
        mmap_threshold_bytes: ``.npy`` files larger than this are memory-mapped
            read-only instead of read into memory.

    Text files (``.csv``/``.txt``) hold one point per line; values are separated by
    commas when the first data line has a comma, otherwise by whitespace. ``#``
    starts a comment, blank lines are skipped, and one header line made only of
    non-numeric tokens may come first. A single-column file is points on the line.

    Returns:
        ``[n]`` (points on the line) or ``[n, d]`` with ``n >= 1``, ``d >= 1`` and all
        values finite. float64 and C-contiguous, or, for a memory-mapped native
        float32/float64 file, an :class:`numpy.memmap` view of it (read-only; possibly
        Fortran-ordered when the file is). Other numeric dtypes (ints, bool, float16)
        are converted to float64.

    Raises:
        InputError: missing file, directory, unsupported suffix, unreadable or corrupt
            file, pickled/object array, non-numeric dtype, wrong or missing ``key``,
            0-d or empty array, NaN/inf values, unparsable or ragged text rows.
    """
    arr, label = _read_array(path, key, mmap_threshold_bytes)
    return _as_points(arr, label)


def load_weights(path: str | os.PathLike[str], n: int, key: str | None = None) -> np.ndarray:
    """Load sample weights for ``n`` points from a file (same formats as
    :func:`load_points`, never memory-mapped).

    Returns:
        float64 ``[n]``, nonnegative, finite, with a positive sum; **not** normalized
        (the marginals are the exact ratios ``w / sum(w)``, see
        :class:`wassnet.ot.problem.Marginal`).

    Raises:
        InputError: any file problem of :func:`load_points`; a shape other than ``[n]``
            or ``[n, 1]`` ("weights in FILE have N entries for n points" when only the
            length is wrong); NaN/inf or negative values; a zero sum.
    """
    arr, label = _read_weights(path, key)
    return _as_weights(arr, n, label)


def validate_points(x: Any, name: str = "points") -> np.ndarray:
    """Check and normalize a point cloud given to the Python API.

    Args:
        x: a NumPy array (an :class:`numpy.memmap` included), a nested list, or a
            torch tensor (detached and copied to the CPU; torch is only touched when
            ``x`` is a tensor).
        name: how error messages call it (e.g. ``"A"``).

    Returns:
        The same normalized form as :func:`load_points`: ``[n]`` or ``[n, d]``, finite,
        non-empty, float64 C-contiguous (a memory-mapped float32/float64 array is
        kept as is). No copy is made when ``x`` already is a float64 C-contiguous
        array of that shape, so the result may share memory with ``x``.

    Raises:
        InputError: ragged/non-array input, non-numeric dtype, 0-d or empty array,
            NaN/inf values.
    """
    return _as_points(_to_numpy(x, name), name)


def validate_weights(w: Any, n: int, name: str = "weights") -> np.ndarray:
    """Check and normalize sample weights for ``n`` points (array, list or tensor).

    Returns:
        A new float64 ``[n]`` array holding the given weights exactly, nonnegative,
        finite, with a positive sum (not normalized: rounding ``w / sum(w)`` would
        change the problem).

    Raises:
        InputError: non-numeric dtype, a shape other than ``[n]`` or ``[n, 1]``,
            NaN/inf or negative values, a zero sum.
    """
    return _as_weights(_to_numpy(w, name), n, name)


def check_same_dimension(a: np.ndarray, b: np.ndarray) -> None:
    """Check that two clouds live in the same space: both 1-D (points on the line), or
    both 2-D ``[n, d]`` and ``[m, d]`` with the same ``d``.

    Raises:
        InputError: ``"dimension mismatch: A has d=.., B has d=.."``.
    """
    if a.ndim == b.ndim == 1:
        return
    if a.ndim == b.ndim == 2 and a.shape[1] == b.shape[1]:
        return
    raise InputError(f"dimension mismatch: A has {_describe_dim(a)}, B has {_describe_dim(b)}")


# ----------------------------------------------------------------------------- W1's input


@dataclass(frozen=True)
class Clouds:
    """The input of W1, checked: two point clouds and their optional sample weights.

    Built only by :func:`load_clouds` and :func:`resolve_clouds`, which guarantee:
    ``a`` and ``b`` are in the normalized form of :func:`validate_points` (``[n]`` or
    ``[n, d]``, finite, non-empty, float64 or a memory-mapped float32/float64 file) and
    in the same space (:func:`check_same_dimension`); ``weights_a`` and ``weights_b``,
    when given, are as :func:`validate_weights` returns them, one per point of their
    cloud (float64, nonnegative, finite, positive sum, not normalized).
    """

    a: np.ndarray
    b: np.ndarray
    weights_a: np.ndarray | None = None
    weights_b: np.ndarray | None = None

    @property
    def weighted(self) -> bool:
        """Whether either cloud has weights."""
        return self.weights_a is not None or self.weights_b is not None


@dataclass(frozen=True)
class InputFiles:
    """The files of ``wassnet estimate A B``: the clouds, the ``.npz`` key they are read
    with (``--key``), and the optional weight files (``--weights-a``, ``--weights-b``,
    read without a key)."""

    a: str | os.PathLike[str]
    b: str | os.PathLike[str]
    key: str | None = None
    weights_a: str | os.PathLike[str] | None = None
    weights_b: str | os.PathLike[str] | None = None


#: Reads one raw array and says how messages name it.
_Source = Callable[[], tuple[np.ndarray, str]]


def load_clouds(files: InputFiles) -> Clouds:
    """Read and check the files of ``wassnet estimate`` (the checks of :func:`load_points`
    and :func:`load_weights`, then :func:`check_same_dimension`).

    Raises:
        InputError: as :func:`load_points`, :func:`load_weights` and
            :func:`check_same_dimension`; messages name the file.
    """

    def points(path: str | os.PathLike[str]) -> _Source:
        return lambda: _read_array(path, files.key, MMAP_THRESHOLD_BYTES)

    def weights(path: str | os.PathLike[str] | None) -> _Source | None:
        return (lambda: _read_weights(path, None)) if path else None

    return _checked_clouds(
        points(files.a), points(files.b), weights(files.weights_a), weights(files.weights_b)
    )


def resolve_clouds(a: Any, b: Any, weights_a: Any = None, weights_b: Any = None) -> Clouds:
    """Check the clouds and weights given to the Python API (arrays, lists or tensors; the
    checks of :func:`validate_points` and :func:`validate_weights`, then
    :func:`check_same_dimension`). No copy of a float64 C-contiguous cloud is made.

    Raises:
        InputError: as :func:`validate_points`, :func:`validate_weights` and
            :func:`check_same_dimension`; messages say ``A``, ``B``, ``weights A``,
            ``weights B``.
    """

    def given(x: Any, label: str) -> _Source:
        return lambda: (_to_numpy(x, label), label)

    return _checked_clouds(
        given(a, "A"),
        given(b, "B"),
        None if weights_a is None else given(weights_a, "weights A"),
        None if weights_b is None else given(weights_b, "weights B"),
    )


def _checked_clouds(
    a: _Source, b: _Source, weights_a: _Source | None, weights_b: _Source | None
) -> Clouds:
    """The one check of W1's input, files and arrays alike. Each source is read just
    before it is checked, so the first problem reported is the first in this order."""
    xa = _as_points(*a())
    xb = _as_points(*b())
    check_same_dimension(xa, xb)
    return Clouds(
        xa, xb, _checked_weights(weights_a, len(xa)), _checked_weights(weights_b, len(xb))
    )


def _checked_weights(source: _Source | None, n: int) -> np.ndarray | None:
    if source is None:
        return None
    arr, label = source()
    return _as_weights(arr, n, label)


# ----------------------------------------------------------------------------- arrays


def _describe_dim(x: np.ndarray) -> str:
    if x.ndim == 1:
        return "d=1 (a 1-D array: points on the line)"
    if x.ndim == 2:
        return f"d={x.shape[1]}"
    return f"shape {tuple(x.shape)} (expected [n] or [n, d])"


def _to_numpy(x: Any, label: str) -> np.ndarray:
    """An ndarray view of ``x`` (memmaps kept); torch tensors go to the CPU."""
    if isinstance(x, np.ndarray):
        return x
    torch = sys.modules.get("torch")  # a tensor implies torch is already imported
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach()
        if t.dtype == torch.bfloat16:  # NumPy has no bfloat16
            t = t.float()
        try:
            return t.cpu().numpy()
        except (TypeError, RuntimeError) as exc:
            raise InputError(
                f"{label}: cannot convert the tensor to NumPy ({_line(exc)})"
            ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"{label}: not a rectangular numeric array, e.g. rows of different lengths "
            f"({_line(exc)})"
        ) from None
    if arr.dtype.kind == "f":  # NumPy may have rounded Python ints mixed with floats
        _check_python_ints(x, label)
    return arr


def _check_python_ints(x: Any, label: str) -> None:
    """Refuse Python ints in a nested sequence that float64 cannot hold exactly."""
    stack = [x]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif (
            isinstance(item, int)
            and not isinstance(item, bool)
            and abs(item) > 2**53
            and int(float(item)) != item
        ):
            raise InputError(
                f"{label}: the integer {item} cannot be represented exactly in float64 "
                "(beyond 2^53); wassnet certifies the input as given, so round or "
                "rescale it first"
            )


def _check_dtype(arr: np.ndarray, label: str) -> None:
    kind = arr.dtype.kind
    if kind in "biuf":
        return
    what = {
        "c": "complex numbers",
        "O": "Python objects",
        "U": "strings",
        "S": "bytes",
        "M": "datetimes",
        "m": "timedeltas",
    }.get(kind, "a structured/record dtype" if arr.dtype.names else "raw bytes")
    raise InputError(
        f"{label}: unsupported dtype {arr.dtype} ({what}); expected real numbers "
        "(float, int or bool)"
    )


def _as_points(arr: np.ndarray, label: str) -> np.ndarray:
    """Shape rules, dtype conversion and the finiteness check shared by all inputs."""
    _check_dtype(arr, label)
    if arr.ndim == 0:
        raise InputError(
            f"{label}: a single number (0-d array); expected points of shape [n] or [n, d]"
        )
    shape = tuple(arr.shape)
    n, d = shape[0], math.prod(shape[1:])
    if n == 0 or d == 0:
        raise InputError(
            f"{label}: empty array of shape {shape}; need at least one point with at least "
            "one coordinate"
        )
    original = arr
    if arr.ndim > 2:
        arr = arr.reshape(n, d)
    if arr.ndim == 2 and d == 1:
        arr = arr.reshape(n)
    mapped = (
        isinstance(original, np.memmap)
        and np.may_share_memory(arr, original)  # reshape did not copy
        and arr.dtype in (np.float32, np.float64)
        and arr.dtype.isnative
    )
    is_float = arr.dtype.kind == "f"
    if not mapped:
        _check_exact_in_float64(arr, label, shape)
        arr = np.ascontiguousarray(arr, dtype=np.float64)
    if is_float:  # ints and bools are always finite
        _check_finite(arr, label, shape)
    return arr


def _check_exact_in_float64(arr: np.ndarray, label: str, shape: tuple[int, ...]) -> None:
    """Refuse values that float64 cannot hold exactly (64-bit integers beyond 2^53,
    extended precision): wassnet certifies the input as given, never a rounded copy."""
    kind, size = arr.dtype.kind, arr.dtype.itemsize
    if not ((kind in "iu" and size > 4) or (kind == "f" and size > 8)):
        return
    flat = arr.reshape(-1)
    step = _CHUNK_ELEMENTS
    bad_count, first = 0, None
    for start in range(0, len(flat), step):
        chunk = np.asarray(flat[start : start + step])
        as_float = chunk.astype(np.float64)
        if kind == "f":
            with np.errstate(over="ignore", invalid="ignore"):
                bad = ~((as_float.astype(chunk.dtype) == chunk) | np.isnan(chunk))
        else:
            low, high = (-(2.0**63), 2.0**63) if kind == "i" else (0.0, 2.0**64)
            fits = (as_float >= low) & (as_float < high)  # converting back cannot overflow
            bad = ~fits
            bad[fits] = as_float[fits].astype(chunk.dtype) != chunk[fits]
        if bad.any():
            bad_count += int(bad.sum())
            if first is None:
                first = start + int(np.flatnonzero(bad)[0])
    if first is None:
        return
    index = np.unravel_index(first, shape) if shape else ()
    where = str(int(index[0])) if len(shape) == 1 else str(tuple(int(i) for i in index))
    what = "integers beyond 2^53" if kind in "iu" else f"{arr.dtype} values"
    raise InputError(
        f"{label}: {bad_count} values cannot be represented exactly in float64 ({what}; "
        f"first {flat[first]} at index {where}); wassnet certifies the input as given, "
        "so round or rescale them first"
    )


def _check_finite(arr: np.ndarray, label: str, shape: tuple[int, ...]) -> None:
    """Raise on NaN/inf, scanning ``arr`` ([n] or [n, d]) by row chunks; indices in the
    message refer to the original ``shape``."""
    n = arr.shape[0]
    d = arr.shape[1] if arr.ndim == 2 else 1
    step = max(1, _CHUNK_ELEMENTS // d)
    n_nan = n_inf = 0
    first: int | None = None  # flat C-order position in the [n, d] view
    for start in range(0, n, step):
        chunk = np.asarray(arr[start : start + step])
        bad = ~np.isfinite(chunk)
        if not bad.any():
            continue
        nans = int(np.isnan(chunk).sum())
        n_nan += nans
        n_inf += int(bad.sum()) - nans
        if first is None:
            first = start * d + int(np.flatnonzero(bad.reshape(-1))[0])
    if first is None:
        return
    index = np.unravel_index(first, shape)
    where = str(int(index[0])) if len(shape) == 1 else str(tuple(int(i) for i in index))
    parts = [f"{k} {kind}" for k, kind in ((n_nan, "NaN"), (n_inf, "inf")) if k]
    raise InputError(
        f"{label}: {n_nan + n_inf} non-finite values ({', '.join(parts)}), first at index {where}"
    )


def _as_weights(arr: np.ndarray, n: int, label: str) -> np.ndarray:
    _check_dtype(arr, label)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InputError(
            f"{label}: expected a 1-D array of {n} weights (or shape [{n}, 1]), got shape "
            f"{tuple(arr.shape)}"
        )
    if arr.shape[0] != n:
        raise InputError(f"{label} have {arr.shape[0]} entries for {n} points")
    _check_exact_in_float64(arr, label, arr.shape)
    w = np.array(arr, dtype=np.float64, order="C")  # always a fresh copy
    _check_finite(w, label, w.shape)
    negative = np.flatnonzero(w < 0)
    if negative.size:
        raise InputError(
            f"{label}: {negative.size} negative values, first at index {int(negative[0])}; "
            "weights must be nonnegative"
        )
    if not (n and w.max() > 0):
        raise InputError(f"{label}: all weights are zero; need a positive sum")
    return w


# ----------------------------------------------------------------------------- files


def _line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_array(
    path: str | os.PathLike[str], key: str | None, mmap_threshold_bytes: int | None
) -> tuple[np.ndarray, str]:
    """The raw array in a file and the label used in messages (the path)."""
    p = os.fsdecode(path)
    if not os.path.exists(p):
        raise InputError(f"{p}: no such file")
    if os.path.isdir(p):
        raise InputError(f"{p}: is a directory, not a file")
    suffix = os.path.splitext(p)[1].lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(
            f"{p}: unsupported file type {suffix or '(no suffix)'}; supported: "
            f"{', '.join(SUPPORTED_SUFFIXES)}"
        )
    if suffix in _TEXT_SUFFIXES:
        if key is not None:
            raise InputError(f"{p}: a key ({key!r}) was given, but only .npz files hold keys")
        return _read_text(p), p
    return _read_numpy(p, key, mmap_threshold_bytes), p


def _read_weights(path: str | os.PathLike[str], key: str | None) -> tuple[np.ndarray, str]:
    """A weight file's raw array (never memory-mapped) and how messages name it."""
    arr, label = _read_array(path, key, None)
    return arr, f"weights in {label}"


def _read_numpy(p: str, key: str | None, mmap_threshold_bytes: int | None) -> np.ndarray:
    """``.npy``/``.npz``, told apart by content (a renamed file still loads)."""
    try:
        with open(p, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
        size = os.path.getsize(p)
    except OSError as exc:
        raise InputError(f"{p}: cannot read the file ({exc.strerror or _line(exc)})") from None
    if not magic:
        raise InputError(f"{p}: the file is empty")
    if magic.startswith(b"\x80"):  # pickle protocol >= 2
        raise InputError(
            f"{p} contains pickled data, not a NumPy array; save plain numeric arrays "
            "with numpy.save"
        )
    is_zip = magic.startswith(_ZIP_MAGIC)
    if not is_zip and magic != _NPY_MAGIC:
        raise InputError(f"{p}: not a NumPy .npy/.npz file (no NumPy header)")
    if not is_zip and key is not None:
        raise InputError(f"{p}: a key ({key!r}) was given, but only .npz files hold keys")
    mmap = None
    if not is_zip and mmap_threshold_bytes is not None and size > mmap_threshold_bytes:
        mmap = "r"
    try:
        if not is_zip:
            return np.load(p, mmap_mode=mmap, allow_pickle=False)
        with np.load(p, allow_pickle=False) as archive:
            return archive[_npz_key(p, archive.files, key)]
    except InputError:
        raise
    except ValueError as exc:
        if "object" in str(exc).lower() or "pickle" in str(exc).lower():
            raise InputError(
                f"{p} contains a pickled/object array; save plain numeric arrays"
            ) from None
        raise InputError(f"{p}: corrupt or truncated file ({_line(exc)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"{p}: corrupt or truncated file ({_line(exc)})") from None


def _npz_key(p: str, files: list[str], key: str | None) -> str:
    available = ", ".join(repr(f) for f in files)
    if not files:
        raise InputError(f"{p}: the .npz archive holds no arrays")
    if key is None:
        if len(files) == 1:
            return files[0]
        raise InputError(
            f"{p} holds {len(files)} arrays; select one by key (available: {available})"
        )
    if key not in files:
        raise InputError(f"{p} has no array {key!r}; available keys: {available}")
    return key


def _split(content: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return content.split()
    return [t.strip() for t in content.split(delimiter)]


def _is_number(token: str) -> bool:
    if "_" in token:  # float() accepts "1_0", NumPy does not
        return False
    try:
        float(token)
    except ValueError:
        return False
    return True


def _data_lines(f: TextIO, skip: int) -> Iterator[tuple[int, str]]:
    """(1-based line number, content) of non-blank lines after ``skip`` lines, with
    ``#`` comments removed."""
    for lineno, line in enumerate(f, 1):
        if lineno <= skip:
            continue
        content = line.partition("#")[0]
        if content.strip():
            yield lineno, content


def _read_text(p: str) -> np.ndarray:
    """A ``[rows, columns]`` float64 array from a numeric text file."""
    try:
        with open(p, encoding="utf-8-sig") as f:
            first = next(_data_lines(f, 0), None)
            if first is None:
                raise InputError(f"{p}: no data (the file is empty or only has comments)")
            first_lineno, first_content = first
            delimiter = "," if "," in first_content else None
            header = not any(_is_number(t) for t in _split(first_content, delimiter))
            skip = first_lineno if header else first_lineno - 1
            f.seek(0)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "input contained no data"
                    values = np.loadtxt(
                        (c for _, c in _data_lines(f, skip)),
                        delimiter=delimiter,
                        comments=None,
                        ndmin=2,
                        dtype=np.float64,
                    )
            except ValueError as exc:
                f.seek(0)
                raise InputError(_text_error(p, f, skip, delimiter, exc)) from None
            if values.size and float(np.abs(values).max()) >= 2.0**53:
                f.seek(0)
                _check_text_integers(p, f, skip, delimiter)
            return values
    except InputError:
        raise
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a UTF-8 text file") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read the file ({exc.strerror or _line(exc)})") from None


def _check_text_integers(p: str, f: TextIO, skip: int, delimiter: str | None) -> None:
    """Refuse integer literals that float64 rounds (beyond 2^53). Decimal literals are
    read as the nearest float64, as every numeric parser does; that float64 is the
    input wassnet certifies."""
    for lineno, content in _data_lines(f, skip):
        for token in _split(content, delimiter):
            digits = token.lstrip("+-")
            if digits.isdigit() and len(digits) >= 16 and int(float(token)) != int(token):
                raise InputError(
                    f"{p}: line {lineno}: the integer {token} cannot be represented exactly "
                    "in float64 (beyond 2^53); round or rescale it first"
                )


def _text_error(p: str, f: TextIO, skip: int, delimiter: str | None, exc: Exception) -> str:
    """Locate why NumPy failed to parse a text file: the line and the reason."""
    columns: tuple[int, int] | None = None  # (line number, count) of the first data row
    for lineno, content in _data_lines(f, skip):
        tokens = _split(content, delimiter)
        for token in tokens:
            if not token:
                return f"{p}: line {lineno}: empty field"
            if not _is_number(token):
                return f"{p}: line {lineno}: cannot parse {token!r} as a number"
        if columns is None:
            columns = (lineno, len(tokens))
        elif len(tokens) != columns[1]:
            return (
                f"{p}: ragged rows: line {lineno} has {len(tokens)} values but line "
                f"{columns[0]} has {columns[1]}"
            )
    return f"{p}: cannot parse as numbers ({_line(exc)})"
