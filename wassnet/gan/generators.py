"""Generators: an MLP for 2-D toy data, a DCGAN-style convolutional net for images.

Both map a latent code ``z ~ N(0, I_latent_dim)`` to a sample. Images come out in
``[-1, 1]`` (a final ``tanh``), the scale on which the trainer feeds real images to the
critic; toy samples are unbounded, like the toy data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wassnet.errors import InputError

__all__ = ["ConvGenerator", "MLPGenerator", "make_generator"]


class MLPGenerator(nn.Module):
    """``z -> x``: dense layers with ReLU, then a linear output layer (Gulrajani et al. toys).

    Args:
        latent_dim: size of the latent code.
        out_features: size of one sample (2 for the toy distributions).
        hidden: widths of the hidden layers.
    """

    def __init__(
        self, latent_dim: int, out_features: int = 2, hidden: Sequence[int] = (256, 256, 256)
    ) -> None:
        super().__init__()
        if latent_dim < 1 or out_features < 1 or any(w < 1 for w in hidden):
            raise InputError("latent_dim, out_features and hidden widths must be >= 1")
        self.latent_dim = latent_dim
        layers: list[nn.Module] = []
        features = latent_dim
        for width in hidden:
            layers += [nn.Linear(features, width), nn.ReLU()]
            features = width
        layers.append(nn.Linear(features, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ConvGenerator(nn.Module):
    """A DCGAN-style generator (Radford et al. 2016) for square images, e.g. 28x28 or 32x32.

    ``z`` goes through a dense layer to a ``(c0, s, s)`` feature map, then transposed
    convolutions (kernel 4, stride 2) double the size while halving the channels, with
    batch normalization and ReLU in between, and a final ``tanh``. Sizes divisible by 8
    with ``size / 8 >= 4`` (32x32) use three upsamplings from 4x4; other sizes divisible
    by 4 (28x28) use two, from 7x7.

    Args:
        latent_dim: size of the latent code.
        image_shape: ``(C, H, W)`` with ``H == W``.
        width: channels before the last transposed convolution; the first feature map
            has ``width * 2**(upsamplings - 1)`` channels.
    """

    def __init__(self, latent_dim: int, image_shape: Sequence[int], width: int = 64) -> None:
        super().__init__()
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or shape[1] != shape[2] or shape[1] % 4:
            raise InputError(
                f"ConvGenerator needs a square (C, H, W) image with H divisible by 4, got {shape}"
            )
        if latent_dim < 1 or width < 1:
            raise InputError("latent_dim and width must be >= 1")
        c, size = shape[0], shape[1]
        ups = 3 if size % 8 == 0 and size // 8 >= 4 else 2
        start = size // 2**ups
        channels = width * 2 ** (ups - 1)
        self.latent_dim = latent_dim
        self.image_shape = shape
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, channels * start * start, bias=False),
            nn.BatchNorm1d(channels * start * start),
            nn.ReLU(),
            nn.Unflatten(1, (channels, start, start)),
        ]
        for _ in range(ups - 1):
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels // 2),
                nn.ReLU(),
            ]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, c, 4, stride=2, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def make_generator(
    data_shape: Sequence[int], latent_dim: int, width: int
) -> MLPGenerator | ConvGenerator:
    """The generator for data of ``data_shape``: an MLP for vectors, DCGAN-style for images."""
    shape = tuple(int(s) for s in data_shape)
    if len(shape) == 1:
        return MLPGenerator(latent_dim, shape[0], hidden=(width, width, width))
    return ConvGenerator(latent_dim, shape, width=width)
