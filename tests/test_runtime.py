"""Shared run infrastructure: device choice, RNG snapshots, atomic checkpoints, datasets."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from wassnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from wassnet.datasets import TOY_DATASETS, load_images, sample_toy
from wassnet.runtime import resolve_device, rng_state, seed_everything, set_rng_state


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    seed_everything(3)
    _draws()
    path = save_checkpoint({"kind": "test", "rng": rng_state()}, tmp_path / "c.pt")
    expected = _draws()
    seed_everything(99)  # scramble every stream
    set_rng_state(load_checkpoint(path, kind="test")["rng"])
    assert _draws() == expected


def test_seed_everything_rejects_non_int() -> None:
    with pytest.raises(TypeError, match="seed"):
        seed_everything(1.5)  # type: ignore[arg-type]


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


def test_checkpoint_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "run" / "ckpt.pt"
    save_checkpoint({"kind": "test", "w": torch.arange(3)}, target)
    save_checkpoint({"kind": "test", "w": torch.arange(4)}, target)
    assert torch.equal(load_checkpoint(target)["w"], torch.arange(4))
    assert [p.name for p in target.parent.iterdir()] == ["ckpt.pt"]


def test_checkpoint_write_failure_keeps_previous(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    save_checkpoint({"kind": "test", "step": 1}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"kind": "test", "bad": Unpicklable()}, target)
    assert load_checkpoint(target)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "the file is empty"),
        (b"not a checkpoint at all", "not a torch file"),
        (b"\x80\x02 not a checkpoint at all", "not a torch file"),
        (b"PK\x03\x04 truncated", "truncated or corrupt"),
    ],
)
def test_bad_checkpoints_get_one_clear_error(tmp_path: Path, content, message) -> None:
    path = tmp_path / "c.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint_and_wrong_kind(tmp_path: Path) -> None:
    path = save_checkpoint({"kind": "gan", "w": torch.randn(1000)}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="expected a 'classifier'"):
        load_checkpoint(path, kind="classifier")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_checkpoint(path)
    assert "miniz" not in str(info.value)
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)


def test_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"kind": "test", "obj": _Custom()}, path)
    with pytest.raises(CheckpointError, match="not a file wassnet wrote") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value)  # never advice to turn the safe loader off


class _Custom:
    pass


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_toy_samplers_are_reproducible(name: str) -> None:
    a = sample_toy(name, 500, torch.Generator().manual_seed(0))
    b = sample_toy(name, 500, torch.Generator().manual_seed(0))
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert torch.isfinite(a).all() and a.abs().max() < 10


def test_eight_gaussians_modes() -> None:
    x = sample_toy("8gaussians", 4000, torch.Generator().manual_seed(1)).double()
    radius = x.norm(dim=1)
    assert (radius - 2).abs().median() < 0.15
    angles = torch.atan2(x[:, 1], x[:, 0])
    counts = torch.bincount(torch.round(angles / (np.pi / 4)).long() % 8, minlength=8)
    assert counts.min() > 350


def test_toy_errors() -> None:
    with pytest.raises(ValueError, match="unknown toy dataset"):
        sample_toy("moons", 10)
    with pytest.raises(ValueError, match="n must be"):
        sample_toy("ring", 0)


def test_load_mnist_from_local_files(mnist_root: Path) -> None:
    data = load_images("mnist", mnist_root, split="test", limit=100)
    assert data.images.shape == (100, 1, 28, 28) and data.shape == (1, 28, 28)
    assert data.images.dtype == torch.float32
    assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0
    assert data.labels.dtype == torch.int64 and set(data.labels.tolist()) <= set(range(10))
    assert data.num_classes == 10 and len(data) == 100


def test_load_images_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load_images("imagenet", tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        load_images("mnist", tmp_path, split="val")
    with pytest.raises(OSError, match="cannot load mnist"):
        load_images("mnist", tmp_path, download=False)
