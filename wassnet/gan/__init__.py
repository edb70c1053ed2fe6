"""Wasserstein GANs whose critic is 1-Lipschitz by construction (no gradient penalty).

* :func:`train_gan` with a :class:`GANConfig`: the resumable trainer (also the
  WGAN-GP ReLU baseline, selected by ``critic="relu-dense"`` / ``"relu-conv"``);
* :func:`load_generator`, :func:`generate`: sampling from a checkpoint;
* :func:`compute_fid`, :func:`frechet_distance`: FID with pytorch-fid's Inception
  (local weights file or pytorch-fid's download);
* :class:`MLPGenerator`, :class:`ConvGenerator`, :func:`build_critic`.
"""

from wassnet.gan.critics import CRITICS, LIPSCHITZ_CRITICS, build_critic
from wassnet.gan.data import DATASETS
from wassnet.gan.fid import (
    FIDResult,
    compute_fid,
    frechet_distance,
    frechet_distance_from_features,
    inception_features,
)
from wassnet.gan.generators import ConvGenerator, MLPGenerator, make_generator
from wassnet.gan.losses import critic_objective, generator_loss, gradient_penalty
from wassnet.gan.trainer import GANConfig, GANResult, generate, load_generator, train_gan

__all__ = [
    "CRITICS",
    "DATASETS",
    "LIPSCHITZ_CRITICS",
    "ConvGenerator",
    "FIDResult",
    "GANConfig",
    "GANResult",
    "MLPGenerator",
    "build_critic",
    "compute_fid",
    "critic_objective",
    "frechet_distance",
    "frechet_distance_from_features",
    "generate",
    "generator_loss",
    "gradient_penalty",
    "inception_features",
    "load_generator",
    "make_generator",
    "train_gan",
]
