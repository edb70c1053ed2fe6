"""Tests of wassnet.w1.io: file formats, shape rules, and one clear InputError per problem."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from wassnet.w1.io import (
    InputError,
    check_same_dimension,
    load_points,
    load_weights,
    validate_points,
    validate_weights,
)

POINTS = np.array([[0.5, -1.0, 2.0], [3.0, 4.25, -5.0], [1e-3, 0.0, 7.0], [8.0, 9.0, 1e6]])


def _is_memmap(x: np.ndarray) -> bool:
    return isinstance(x, np.memmap) or isinstance(x.base, np.memmap)


def _assert_clean(x: np.ndarray, expected: np.ndarray) -> None:
    assert x.dtype == np.float64
    assert x.flags.c_contiguous
    assert not _is_memmap(x)
    np.testing.assert_array_equal(x, expected)


# ----------------------------------------------------------------------------- round trips


def test_npy_round_trip(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, POINTS)
    _assert_clean(load_points(p), POINTS)
    _assert_clean(load_points(str(p)), POINTS)


def test_suffix_is_case_insensitive(tmp_path):
    p = tmp_path / "a.NPY"
    with open(p, "wb") as f:
        np.save(f, POINTS)
    _assert_clean(load_points(p), POINTS)


def test_float32_npy_is_converted_when_not_mapped(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, POINTS.astype(np.float32))
    _assert_clean(load_points(p), POINTS.astype(np.float32).astype(np.float64))


def test_fortran_order_npy_becomes_c_contiguous(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.asfortranarray(POINTS))
    _assert_clean(load_points(p), POINTS)


def test_npz_single_array(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, whatever=POINTS)
    _assert_clean(load_points(p), POINTS)
    _assert_clean(load_points(p, key="whatever"), POINTS)


def test_npz_with_key(tmp_path):
    p = tmp_path / "a.npz"
    np.savez_compressed(p, x=POINTS, y=POINTS[:2] * 10)
    _assert_clean(load_points(p, key="x"), POINTS)
    _assert_clean(load_points(p, key="y"), POINTS[:2] * 10)


def test_csv_with_header_and_comments(tmp_path):
    p = tmp_path / "a.csv"
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in POINTS)
    p.write_text(f"# a comment\n\nx, y ,z\n{body}  # trailing comment\n  # indented\n\n")
    _assert_clean(load_points(p), POINTS)


def test_csv_without_header_and_with_bom(tmp_path):
    p = tmp_path / "a.csv"
    body = "\n".join(", ".join(repr(float(v)) for v in row) for row in POINTS)
    p.write_text("\ufeff" + body, encoding="utf-8")
    _assert_clean(load_points(p), POINTS)


def test_txt_whitespace_separated(tmp_path):
    p = tmp_path / "a.TXT"
    p.write_text("\n".join(" \t ".join(repr(float(v)) for v in row) for row in POINTS) + "\n")
    _assert_clean(load_points(p), POINTS)


def test_one_dimensional_npy_stays_one_dimensional(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.array([3.0, -1.0, 2.5]))
    x = load_points(p)
    assert x.shape == (3,)
    _assert_clean(x, np.array([3.0, -1.0, 2.5]))


def test_single_column_text_is_points_on_the_line(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("value\n1\n2.5\n-3\n")
    _assert_clean(load_points(p), np.array([1.0, 2.5, -3.0]))


def test_single_column_2d_array_is_squeezed(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.array([[1.0], [2.0]]))
    _assert_clean(load_points(p), np.array([1.0, 2.0]))


def test_single_row_text_is_one_point(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("1,2,3\n")
    _assert_clean(load_points(p), np.array([[1.0, 2.0, 3.0]]))


def test_three_dimensional_is_flattened(tmp_path):
    images = np.arange(5 * 4 * 3, dtype=np.float64).reshape(5, 4, 3)
    p = tmp_path / "a.npy"
    np.save(p, images)
    _assert_clean(load_points(p), images.reshape(5, 12))


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.int16, np.bool_, np.float16])
def test_other_numeric_dtypes_are_converted(tmp_path, dtype):
    data = (np.arange(12).reshape(4, 3) % 3).astype(dtype)
    p = tmp_path / "a.npy"
    np.save(p, data)
    _assert_clean(load_points(p), data.astype(np.float64))


def test_renamed_npz_is_read_by_content(tmp_path):
    p = tmp_path / "a.npy"
    with open(p, "wb") as f:
        np.savez(f, x=POINTS)
    _assert_clean(load_points(p), POINTS)


# ----------------------------------------------------------------------------- memory map


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_float_npy_is_memory_mapped(tmp_path, dtype):
    p = tmp_path / "a.npy"
    np.save(p, POINTS.astype(dtype))
    x = load_points(p, mmap_threshold_bytes=16)
    assert _is_memmap(x)
    assert x.dtype == dtype
    np.testing.assert_array_equal(x, POINTS.astype(dtype))
    assert not _is_memmap(load_points(p, mmap_threshold_bytes=os.path.getsize(p)))


def test_memory_mapped_images_are_flattened_without_copy(tmp_path):
    images = np.arange(6 * 2 * 2, dtype=np.float32).reshape(6, 2, 2)
    p = tmp_path / "a.npy"
    np.save(p, images)
    x = load_points(p, mmap_threshold_bytes=0)
    assert _is_memmap(x)
    assert x.shape == (6, 4)
    np.testing.assert_array_equal(x, images.reshape(6, 4))


def test_memory_mapped_int_file_is_converted(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.arange(6, dtype=np.int32).reshape(3, 2))
    x = load_points(p, mmap_threshold_bytes=0)
    _assert_clean(x, np.arange(6.0).reshape(3, 2))


def test_memory_mapped_nan_is_found_across_chunks(tmp_path, monkeypatch):
    import wassnet.w1.io

    monkeypatch.setattr(wassnet.w1.io, "_CHUNK_ELEMENTS", 6)  # 3 rows of d=2 per chunk
    data = np.zeros((20, 2), dtype=np.float32)
    data[7, 1] = np.nan
    data[13, 0] = np.inf
    data[19, 1] = -np.inf
    p = tmp_path / "a.npy"
    np.save(p, data)
    with pytest.raises(
        InputError, match=r"3 non-finite values \(1 NaN, 2 inf\), first at index \(7, 1\)"
    ):
        load_points(p, mmap_threshold_bytes=0)


# ----------------------------------------------------------------------------- file errors


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.npy: no such file"):
        load_points(tmp_path / "nope.npy")


def test_directory(tmp_path):
    d = tmp_path / "dir.npy"
    d.mkdir()
    with pytest.raises(InputError, match="is a directory"):
        load_points(d)


def test_unknown_suffix(tmp_path):
    p = tmp_path / "a.json"
    p.write_text("[1, 2]")
    with pytest.raises(InputError, match=r"unsupported file type \.json; supported: \.npy, \.npz"):
        load_points(p)


def test_no_suffix(tmp_path):
    p = tmp_path / "points"
    p.write_text("1 2")
    with pytest.raises(InputError, match=r"\(no suffix\)"):
        load_points(p)


def test_empty_npy_file(tmp_path):
    p = tmp_path / "a.npy"
    p.write_bytes(b"")
    with pytest.raises(InputError, match=r"a\.npy: the file is empty"):
        load_points(p)


def test_not_a_numpy_file(tmp_path):
    p = tmp_path / "a.npy"
    p.write_text("1, 2, 3\n")
    with pytest.raises(InputError, match=r"not a NumPy \.npy/\.npz file"):
        load_points(p)


@pytest.mark.parametrize("mmap_threshold_bytes", [0, 2**30])
def test_truncated_npy(tmp_path, mmap_threshold_bytes):
    p = tmp_path / "a.npy"
    np.save(p, np.arange(1000.0))
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(InputError, match=r"a\.npy: corrupt or truncated file"):
        load_points(p, mmap_threshold_bytes=mmap_threshold_bytes)


def test_corrupt_npz(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, x=POINTS)
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(InputError, match=r"a\.npz: corrupt or truncated file"):
        load_points(p)


@pytest.mark.parametrize("mmap_threshold_bytes", [0, 2**30])
def test_pickled_object_array(tmp_path, mmap_threshold_bytes):
    p = tmp_path / "a.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="contains a pickled/object array; save plain numeric"):
        load_points(p, mmap_threshold_bytes=mmap_threshold_bytes)


def test_pickled_object_array_in_npz(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="contains a pickled/object array"):
        load_points(p)


def test_plain_pickle_file(tmp_path):
    import pickle

    p = tmp_path / "a.npy"
    p.write_bytes(pickle.dumps(POINTS))
    with pytest.raises(InputError, match="contains pickled data"):
        load_points(p)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (np.array(["1", "2"]), "strings"),
        (np.zeros(3, dtype=[("a", "f8"), ("b", "i4")]), "structured"),
        (np.array([1 + 2j, 3j]), "complex"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "datetimes"),
    ],
)
def test_non_numeric_dtypes(tmp_path, data, what):
    p = tmp_path / "a.npy"
    np.save(p, data)
    with pytest.raises(InputError, match=rf"a\.npy: unsupported dtype .*{what}"):
        load_points(p)


def test_npz_several_arrays_needs_key(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, x=POINTS, y=POINTS)
    with pytest.raises(
        InputError, match=r"holds 2 arrays; select one by key \(available: 'x', 'y'\)"
    ):
        load_points(p)


@pytest.mark.parametrize("arrays", [{"x": POINTS, "y": POINTS}, {"x": POINTS}])
def test_npz_wrong_key(tmp_path, arrays):
    p = tmp_path / "a.npz"
    np.savez(p, **arrays)
    with pytest.raises(InputError, match=r"has no array 'z'; available keys: 'x'"):
        load_points(p, key="z")


def test_npz_without_arrays(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p)
    with pytest.raises(InputError, match="holds no arrays"):
        load_points(p)


@pytest.mark.parametrize("name", ["a.npy", "a.csv", "a.txt"])
def test_key_for_a_non_npz_file(tmp_path, name):
    p = tmp_path / name
    if name.endswith(".npy"):
        np.save(p, POINTS)
    else:
        p.write_text("1 2\n")
    with pytest.raises(InputError, match=r"a key \('x'\) was given, but only \.npz files"):
        load_points(p, key="x")


def test_zero_d_array(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.float64(3.0))
    with pytest.raises(InputError, match=r"a\.npy: a single number \(0-d array\)"):
        load_points(p)


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0), (2, 0, 5), (0, 28, 28)])
def test_empty_arrays(tmp_path, shape):
    p = tmp_path / "a.npy"
    np.save(p, np.zeros(shape))
    with pytest.raises(InputError, match=r"a\.npy: empty array of shape"):
        load_points(p)
    with pytest.raises(InputError, match="empty array"):
        load_points(p, mmap_threshold_bytes=0)


def test_nan_and_inf_count_and_first_index(tmp_path):
    data = POINTS.copy()
    data[1, 2] = np.nan
    data[2, 0] = np.inf
    data[3, 1] = np.nan
    p = tmp_path / "a.npy"
    np.save(p, data)
    with pytest.raises(
        InputError,
        match=r"a\.npy: 3 non-finite values \(2 NaN, 1 inf\), first at index \(1, 2\)",
    ):
        load_points(p)


def test_nan_index_refers_to_original_shape(tmp_path):
    data = np.zeros((3, 2, 2))
    data[2, 1, 0] = np.nan
    p = tmp_path / "a.npy"
    np.save(p, data)
    with pytest.raises(
        InputError, match=r"1 non-finite values \(1 NaN\), first at index \(2, 1, 0\)"
    ):
        load_points(p)


def test_float16_overflow_is_reported(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.array([1.0, np.inf, 2.0], dtype=np.float16))
    with pytest.raises(InputError, match=r"1 non-finite values \(1 inf\), first at index 1$"):
        load_points(p)


def test_nan_in_csv(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("1,2\n3,nan\n")
    with pytest.raises(InputError, match=r"a\.csv: 1 non-finite values \(1 NaN\)"):
        load_points(p)


def test_text_not_a_number_names_the_line(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("# comment\nx,y\n1,2\n\n3,oops\n")
    with pytest.raises(InputError, match=r"a\.csv: line 5: cannot parse 'oops' as a number"):
        load_points(p)


def test_text_python_only_number_syntax_is_rejected(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("1,2\n1_0,2\n")  # float() accepts "1_0", NumPy does not
    with pytest.raises(InputError, match=r"line 2: cannot parse '1_0' as a number"):
        load_points(p)


def test_big_endian_memory_map_is_converted(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, POINTS.astype(">f8"))
    _assert_clean(load_points(p, mmap_threshold_bytes=0), POINTS)


def test_text_second_header_line_is_an_error(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("x y\nunits units\n1 2\n")
    with pytest.raises(InputError, match=r"line 2: cannot parse 'units'"):
        load_points(p)


def test_text_empty_field(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("1,2\n3,,4\n")
    with pytest.raises(InputError, match="line 2: empty field"):
        load_points(p)


def test_ragged_csv(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("1,2\n3,4\n5,6,7\n")
    with pytest.raises(
        InputError, match=r"a\.csv: ragged rows: line 3 has 3 values but line 1 has 2"
    ):
        load_points(p)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n", "x,y\n"])
def test_text_without_data(tmp_path, text):
    p = tmp_path / "a.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=r"a\.csv: (no data|empty array)"):
        load_points(p)


def test_text_not_utf8(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"1 2\n\xff\xfe 3\n")
    with pytest.raises(InputError, match="not a UTF-8 text file"):
        load_points(p)


@pytest.mark.parametrize("name", ["a.npy", "a.csv"])
def test_unreadable_file(tmp_path, monkeypatch, name):
    import wassnet.w1.io

    p = tmp_path / name
    p.write_text("1 2\n")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(wassnet.w1.io, "open", denied, raising=False)  # shadows builtins.open
    with pytest.raises(InputError, match=rf"{name}: cannot read the file \(Permission denied\)"):
        load_points(p)


def test_messages_are_one_line(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.arange(1000.0))
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(InputError) as info:
        load_points(p)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


# ----------------------------------------------------------------------------- validate_points


def test_validate_points_list_and_array():
    _assert_clean(validate_points(POINTS.tolist()), POINTS)
    _assert_clean(validate_points([1, 2, 3]), np.array([1.0, 2.0, 3.0]))
    _assert_clean(validate_points(np.ones((2, 3, 4), dtype=np.int8)), np.ones((2, 12)))
    strided = np.asfortranarray(POINTS)[::2]
    _assert_clean(validate_points(strided), POINTS[::2])


def test_validate_points_torch_tensor():
    t = torch.tensor(POINTS, dtype=torch.float32, requires_grad=True)
    _assert_clean(validate_points(t), POINTS.astype(np.float32).astype(np.float64))
    _assert_clean(validate_points(torch.ones(3, 2, dtype=torch.bfloat16)), np.ones((3, 2)))
    _assert_clean(validate_points(torch.arange(4)), np.arange(4.0))


def test_validate_points_keeps_memmap(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, POINTS.astype(np.float32))
    mm = np.load(p, mmap_mode="r")
    x = validate_points(mm, "A")
    assert _is_memmap(x)
    np.testing.assert_array_equal(x, POINTS.astype(np.float32))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[1.0, 2.0], [3.0]], r"A: not a rectangular numeric array"),
        ([{"a": 1}], r"A: unsupported dtype object \(Python objects\)"),
        (["x", "y"], r"A: unsupported dtype <U1 \(strings\)"),
        (torch.tensor([1 + 1j]), r"A: unsupported dtype complex64"),
        (3.0, r"A: a single number \(0-d array\)"),
        ([], r"A: empty array of shape \(0,\)"),
        (np.zeros((4, 0)), r"A: empty array of shape \(4, 0\)"),
        ([[1.0, float("nan")]], r"A: 1 non-finite values \(1 NaN\), first at index \(0, 1\)"),
        (torch.tensor([0.0, float("-inf")]), r"A: 1 non-finite values \(1 inf\), first at index 1"),
    ],
)
def test_validate_points_errors(value, message):
    with pytest.raises(InputError, match=message):
        validate_points(value, "A")


# ----------------------------------------------------------------------------- weights


def test_validate_weights_keeps_the_given_values():
    """Weights are returned exactly as given (float64), not normalized: rounding
    w / sum(w) would change the problem (the marginals are exact ratios downstream)."""
    w = validate_weights([1, 3, 0, 4], 4)
    assert w.dtype == np.float64 and w.shape == (4,)
    np.testing.assert_array_equal(w, [1.0, 3.0, 0.0, 4.0])
    np.testing.assert_array_equal(validate_weights(np.array([[2.0], [2.0]]), 2), [2.0, 2.0])
    np.testing.assert_array_equal(validate_weights(torch.tensor([1.0, 1.0]), 2), [1.0, 1.0])
    huge = validate_weights([1e308, 1e308], 2)  # a sum that would overflow is fine
    np.testing.assert_array_equal(huge, [1e308, 1e308])
    with pytest.raises(InputError, match="2\\^53"):
        validate_weights(np.array([2**53 + 1, 1], dtype=np.int64), 2)


def test_validate_weights_does_not_alias_input():
    src = np.array([1.0, 1.0])
    w = validate_weights(src, 2)
    w[0] = 99.0
    assert src[0] == 1.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1.0, 2.0, 3.0], r"^weights A have 3 entries for 4 points$"),
        (np.ones((4, 2)), r"weights A: expected a 1-D array of 4 weights .*got shape \(4, 2\)"),
        ([1.0, -1.0, 2.0, -3.0], r"weights A: 2 negative values, first at index 1"),
        ([1.0, np.nan, 1.0, 1.0], r"weights A: 1 non-finite values \(1 NaN\)"),
        ([0.0, 0.0, 0.0, 0.0], r"weights A: all weights are zero"),
        (["a", "b", "c", "d"], r"weights A: unsupported dtype"),
    ],
)
def test_validate_weights_errors(value, message):
    with pytest.raises(InputError, match=message):
        validate_weights(value, 4, "weights A")


def test_load_weights_from_files(tmp_path):
    p = tmp_path / "w.txt"
    p.write_text("weight\n1\n1\n2\n")
    np.testing.assert_array_equal(load_weights(p, 3), [1.0, 1.0, 2.0])
    q = tmp_path / "w.npz"
    np.savez(q, a=POINTS, w=np.array([1, 1, 1, 1], dtype=np.int32))
    w = load_weights(q, 4, key="w")
    assert w.dtype == np.float64
    np.testing.assert_array_equal(w, np.ones(4))


def test_load_weights_length_mismatch(tmp_path):
    p = tmp_path / "w.npy"
    np.save(p, np.ones(5))
    with pytest.raises(InputError, match=r"^weights in .*w\.npy have 5 entries for 3 points$"):
        load_weights(p, 3)


def test_load_weights_negative(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("1\n-2\n")
    with pytest.raises(InputError, match=r"weights in .*w\.csv: 1 negative values"):
        load_weights(p, 2)


def test_load_weights_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_weights(tmp_path / "w.npy", 3)


# ----------------------------------------------------------------------------- dimensions


def test_check_same_dimension_accepts_matching():
    check_same_dimension(np.zeros(3), np.zeros(5))
    check_same_dimension(np.zeros((3, 2)), np.zeros((7, 2)))


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.zeros((3, 2)), np.zeros((3, 4)), r"^dimension mismatch: A has d=2, B has d=4$"),
        (np.zeros(3), np.zeros((3, 4)), r"dimension mismatch: A has d=1 \(a 1-D array"),
        (np.zeros((3, 4)), np.zeros((3, 1)), r"A has d=4, B has d=1$"),
    ],
)
def test_check_same_dimension_mismatch(a, b, message):
    with pytest.raises(InputError, match=message):
        check_same_dimension(a, b)
