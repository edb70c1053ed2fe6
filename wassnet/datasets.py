"""Datasets: image datasets through torchvision, and 2-D toy distributions.

Images are returned as whole tensors in memory (MNIST is 47 MB as uint8), which is far
faster on a CPU than a per-item ``DataLoader`` with PIL transforms. Pixel values are in
``[0, 1]``: the scale on which certified L2 radii are quoted (Li et al. 2019: eps = 1.58
on MNIST). GANs that want ``[-1, 1]`` map ``2x - 1`` themselves.

Downloads go through torchvision (``download=True``): on a machine without internet,
point ``root`` at a writable folder holding a copy of the raw files (torchvision's
layout, e.g. ``ROOT/MNIST/raw/*.gz``); torchvision verifies their md5 and skips the
network.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from wassnet.errors import InputError
from wassnet.names import IMAGE_DATASETS, TOY_DATASETS

__all__ = [
    "IMAGE_DATASETS",
    "TOY_DATASETS",
    "ImageData",
    "default_data_root",
    "load_images",
    "sample_toy",
]


@dataclass(frozen=True)
class ImageData:
    """A whole split in memory: ``images`` float32 [N, C, H, W] in [0, 1], ``labels`` int64 [N]."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return IMAGE_DATASETS[self.name][2]

    def __len__(self) -> int:
        return len(self.labels)


def default_data_root() -> Path:
    """``$WASSNET_DATA`` if set, else ``~/.cache/wassnet/data``."""
    env = os.environ.get("WASSNET_DATA")
    return Path(env) if env else Path.home() / ".cache" / "wassnet" / "data"


def load_images(
    name: str,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    download: bool = True,
    limit: int | None = None,
) -> ImageData:
    """Load a whole image dataset split (``"train"`` or ``"test"``) as tensors in [0, 1].

    ``limit`` keeps the first ``limit`` examples. Raises ``ValueError`` for an unknown
    dataset or split, and ``OSError`` with the root in the message when the files are
    neither there nor downloadable.
    """
    if name not in IMAGE_DATASETS:
        raise InputError(f"unknown dataset {name!r}: choose one of {', '.join(IMAGE_DATASETS)}")
    if split not in ("train", "test"):
        raise InputError(f"unknown split {split!r}: choose train or test")
    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    import torchvision

    cls_name, _, _ = IMAGE_DATASETS[name]
    folder = Path(root) if root is not None else default_data_root()
    try:
        ds = getattr(torchvision.datasets, cls_name)(
            str(folder), train=split == "train", download=download
        )
    except Exception as exc:  # URLError, RuntimeError("Dataset not found"), ...
        reason = " ".join(str(exc).split())[:200]
        raise OSError(
            f"cannot load {name} from {str(folder)!r} ({reason}); without internet, copy "
            f"torchvision's raw files (e.g. {cls_name}/raw/*.gz) into that folder"
        ) from None
    data = torch.as_tensor(ds.data)
    # MNIST-like data is [N, H, W]; CIFAR's is [N, H, W, C].
    data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    if limit is not None:
        data, labels = data[:limit], labels[:limit]
    images = data.to(torch.float32).div_(255.0).contiguous()
    return ImageData(name=name, split=split, images=images, labels=labels)


# ---------------------------------------------------------------------------
# 2-D toy distributions (Gulrajani et al. 2017 style)


def _eight_gaussians(n: int, gen: torch.Generator) -> torch.Tensor:
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centers = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    idx = torch.randint(0, 8, (n,), generator=gen)
    return centers[idx] + 0.02**0.5 * torch.randn(n, 2, generator=gen, dtype=torch.float64)


def _twenty_five_gaussians(n: int, gen: torch.Generator) -> torch.Tensor:
    grid = torch.arange(-2, 3, dtype=torch.float64)
    centers = torch.cartesian_prod(grid, grid)
    idx = torch.randint(0, 25, (n,), generator=gen)
    return centers[idx] + 0.05 * torch.randn(n, 2, generator=gen, dtype=torch.float64)


def _ring(n: int, gen: torch.Generator) -> torch.Tensor:
    angle = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    radius = 2.0 + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)


def _swissroll(n: int, gen: torch.Generator) -> torch.Tensor:
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=gen, dtype=torch.float64))
    pts = torch.stack([t * t.cos(), t * t.sin()], dim=1) / 5.0
    return pts + 0.05 * torch.randn(n, 2, generator=gen, dtype=torch.float64)


#: name (:data:`wassnet.names.TOY_DATASETS`) -> sampler(n, generator), float64 [n, 2].
_TOY_SAMPLERS = {
    "8gaussians": _eight_gaussians,
    "25gaussians": _twenty_five_gaussians,
    "ring": _ring,
    "swissroll": _swissroll,
}
assert tuple(_TOY_SAMPLERS) == TOY_DATASETS, "wassnet.names.TOY_DATASETS and the samplers disagree"


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` points (float32 [n, 2]) from a 2-D toy distribution in :data:`TOY_DATASETS`.

    Draws only from ``generator`` (a CPU ``torch.Generator``; a fresh unseeded one if
    None), so runs are reproducible and resumable.
    """
    if name not in TOY_DATASETS:
        raise InputError(f"unknown toy dataset {name!r}: choose one of {', '.join(TOY_DATASETS)}")
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    gen = (
        generator if generator is not None else torch.Generator().manual_seed(torch.seed() % 2**63)
    )
    return _TOY_SAMPLERS[name](n, gen).to(torch.float32)
