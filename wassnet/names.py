"""The names every job and subcommand share, in one torch-free registry.

``wassnet --help`` reads its choices from here without importing torch; the modules
that build things (:mod:`wassnet.critics`, :mod:`wassnet.datasets`) read the same
tables, so a name exists once.

* :data:`ARCHS`: the network architectures (``--arch``), the same for the WGAN critic,
  the certified classifier and :func:`wassnet.make_critic`;
* :data:`CONSTRAINTS`: how the Lipschitz constant is controlled (``--constraint``);
* :data:`METRICS`: the ground costs of W1 (``--metric``);
* :data:`IMAGE_DATASETS`, :data:`TOY_DATASETS`, :data:`DATASETS`: the datasets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wassnet import norms

__all__ = [
    "ARCHS",
    "CONSTRAINTS",
    "DATASETS",
    "FAMILIES",
    "IMAGE_DATASETS",
    "LEGACY_GAN_CRITICS",
    "METRICS",
    "NORM_METRIC",
    "TOY_DATASETS",
    "ArchSpec",
    "default_arch",
    "is_toy",
]


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: ``kind`` (dense or conv), its layer sizes, and one line of help.

    ``channels`` holds one ``(out_channels, kernel, stride)`` per convolution (conv
    only); ``hidden`` the dense widths after them.

    ``family`` says which layers build it. ``None``: the ``--constraint`` decides
    (Björck dense and BCOP conv layers with GroupSort, or plain layers projected or left
    free). ``"aol"``, ``"cpl"``, ``"sll"``: the preset's own layers, 1-Lipschitz in l2 by
    construction (:mod:`wassnet.nn.aol`, :mod:`wassnet.nn.cpl`, :mod:`wassnet.nn.sll`);
    such a preset takes ``--constraint orthogonal`` (the default) only, and certifies
    in l1 / l-inf only the (large) bounds its layers' rules give. For them an entry of
    ``channels`` reads: stride 2 = pixel unshuffle (an exact permutation, 4x the
    channels, half the size) then, if the channel count differs, an AOL convolution of
    that kernel to ``out_channels``; stride 1 with a new channel count = an AOL
    convolution; stride 1 at the same count = one layer of the family. ``hidden``
    likewise: a new width = an AOL dense layer, the same width = one layer of the family.
    The last layer (to the outputs) is a Björck layer.

    ``family="linf-dist"``: l-inf-distance neurons (:mod:`wassnet.nn.linf`), one
    :class:`~wassnet.nn.LinfDistLinear` per entry of ``hidden`` with a
    :class:`~wassnet.nn.MeanShift` after it, then one to the outputs (negated); built for
    l-inf (1-Lipschitz there by construction), trained with ``--norm inf``.
    """

    kind: str
    hidden: tuple[int, ...]
    channels: tuple[tuple[int, int, int], ...] = field(default=())
    help: str = ""
    family: str | None = None


#: The layer families of :attr:`ArchSpec.family` (the presets built from their own layers).
FAMILIES: tuple[str, ...] = ("aol", "cpl", "sll")

# The shared skeleton of the family presets on 28 x 28 inputs: unshuffle to 14 x 14, an AOL
# stem to 16 channels, two family layers, unshuffle to 7 x 7 with an AOL 1x1 to 32, two
# family layers; then an AOL dense layer to 256 and two family layers of 256.
_FAMILY_CHANNELS = (
    (4, 1, 2),
    (16, 3, 1),
    (16, 3, 1),
    (16, 3, 1),
    (32, 1, 2),
    (32, 3, 1),
    (32, 3, 1),
)
_FAMILY_HIDDEN = (256, 256, 256)

#: ``--arch`` names. The conv networks are Li et al. (2019)'s "small" and "large"; the
#: ``aol-``, ``cpl-`` and ``sll-`` presets share one small skeleton (in the style of Prach
#: et al. 2024's equal-budget comparison) built from AOL, CPL or SLL layers.
ARCHS: dict[str, ArchSpec] = {
    "dense": ArchSpec("dense", (1024, 1024, 1024), help="3 dense layers of 1024"),
    "dense-small": ArchSpec("dense", (256, 256, 256), help="3 dense layers of 256"),
    "conv-small": ArchSpec(
        "conv", (100,), ((16, 4, 2), (32, 4, 2)), help="2 stride-2 convolutions + dense 100"
    ),
    "conv-large": ArchSpec(
        "conv",
        (512, 512),
        ((32, 3, 1), (32, 4, 2), (64, 3, 1), (64, 4, 2)),
        help="4 convolutions + dense 512, 512",
    ),
    "aol-small": ArchSpec(
        "conv",
        _FAMILY_HIDDEN,
        _FAMILY_CHANNELS,
        help="AOL convolutions (16 ch at 14x14, 32 at 7x7) + AOL dense 256 x 3, MaxMin",
        family="aol",
    ),
    "cpl-small": ArchSpec(
        "conv",
        _FAMILY_HIDDEN,
        _FAMILY_CHANNELS,
        help="CPL residual convolutions (16 ch at 14x14, 32 at 7x7) + CPL dense 256 x 2",
        family="cpl",
    ),
    "sll-small": ArchSpec(
        "conv",
        _FAMILY_HIDDEN,
        _FAMILY_CHANNELS,
        help="SLL residual convolutions (16 ch at 14x14, 32 at 7x7) + SLL dense 256 x 2",
        family="sll",
    ),
    "linf-dist": ArchSpec(
        "dense",
        (1024, 1024, 1024, 1024),
        help="5 l-inf-distance layers (4 x 1024 + output), mean shift; l-inf only "
        "(Zhang et al. 2021 use 5 x 5120 on MNIST)",
        family="linf-dist",
    ),
}

#: ``--constraint``: ``orthogonal`` = Björck dense layers and BCOP convolutions with
#: GroupSort (1-Lipschitz by construction, l2); ``projection`` = plain layers with
#: GroupSort whose weights are projected after every update (:mod:`wassnet.nn.projection`,
#: l1, l2 or l-inf); ``none`` = plain layers with ReLU, whose Lipschitz constant is not
#: controlled (the WGAN-GP baseline).
CONSTRAINTS: tuple[str, ...] = ("orthogonal", "projection", "none")

#: Ground costs of W1 (``--metric``), named as in SciPy's ``cdist``: ``euclidean``
#: (l2), ``cityblock`` (l1), ``chebyshev`` (l-inf) (the table is :mod:`wassnet.norms`).
METRICS: tuple[str, ...] = norms.METRICS

#: The ground cost whose W1 a critic 1-Lipschitz in that norm estimates (``--norm``):
#: ``{norm.cli: norm.metric}`` of :mod:`wassnet.norms`.
NORM_METRIC: dict[str, str] = {norm.cli: norm.metric for norm in norms.TABLE}

#: The GAN critic names of wassnet 0.1 -> (arch, constraint), read from old
#: checkpoints and the hidden ``--critic`` option.
LEGACY_GAN_CRITICS: dict[str, tuple[str, str]] = {
    "groupsort-dense": ("dense-small", "orthogonal"),
    "bcop-conv": ("conv-small", "orthogonal"),
    "relu-dense": ("dense-small", "none"),
    "relu-conv": ("conv-small", "none"),
}

#: torchvision class name, shape of one image, number of classes.
IMAGE_DATASETS: dict[str, tuple[str, tuple[int, int, int], int]] = {
    "mnist": ("MNIST", (1, 28, 28), 10),
    "fashion-mnist": ("FashionMNIST", (1, 28, 28), 10),
    "cifar10": ("CIFAR10", (3, 32, 32), 10),
}

#: 2-D toy distributions (samplers in :mod:`wassnet.datasets`).
TOY_DATASETS: tuple[str, ...] = ("8gaussians", "25gaussians", "ring", "swissroll")

#: Every dataset name.
DATASETS: tuple[str, ...] = (*IMAGE_DATASETS, *TOY_DATASETS)


def is_toy(name: str) -> bool:
    """Whether ``name`` is a 2-D toy distribution (else an image dataset)."""
    return name in TOY_DATASETS


def default_arch(dataset: str) -> str:
    """The default ``--arch`` for a dataset: ``dense-small`` for 2-D data, else ``conv-small``."""
    return "dense-small" if is_toy(dataset) else "conv-small"
