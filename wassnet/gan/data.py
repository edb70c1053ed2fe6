"""Where a GAN's real samples come from: an image dataset in memory or a toy sampler.

Every draw uses only the ``torch.Generator`` passed in, so a run that checkpoints that
generator resumes with exactly the same minibatches.
"""

from __future__ import annotations

import os

import torch

from wassnet.datasets import load_images, sample_toy
from wassnet.errors import InputError
from wassnet.names import DATASETS, is_toy

__all__ = ["DATASETS", "DataSource", "is_toy"]


class DataSource:
    """Real samples of one dataset: images scaled to ``[-1, 1]`` or 2-D toy points.

    Args:
        name: one of :data:`DATASETS`.
        root: data folder for image datasets (torchvision layout; downloaded if absent).
        limit: keep only the first ``limit`` training images.
    """

    def __init__(
        self,
        name: str,
        root: str | os.PathLike[str] | None = None,
        limit: int | None = None,
    ) -> None:
        if name not in DATASETS:
            raise InputError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
        self.name = name
        self.images: torch.Tensor | None = None
        if is_toy(name):
            self.shape: tuple[int, ...] = (2,)
        else:
            data = load_images(name, root, split="train", limit=limit)
            self.images = data.images.mul_(2).sub_(1)
            self.shape = data.shape

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` real samples (with replacement for images), drawn from ``generator``."""
        if self.images is None:
            return sample_toy(self.name, n, generator)
        idx = torch.randint(0, len(self.images), (n,), generator=generator)
        return self.images[idx]
