"""Wasserstein GANs whose critic is 1-Lipschitz by construction (no gradient penalty).

The names are imported on first use (``import wassnet.gan`` does not import torch).

* :func:`train_gan` with a :class:`GANConfig`: the resumable trainer (also the
  WGAN-GP ReLU baseline, selected by ``constraint="none"``);
* :func:`load_generator`, :func:`generate`: sampling from a checkpoint;
* :func:`compute_fid`, :func:`frechet_distance`: FID with pytorch-fid's Inception
  (local weights file or pytorch-fid's download);
* :class:`MLPGenerator`, :class:`ConvGenerator`, :func:`build_critic`.
"""

from wassnet._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".critics": ["build_critic"],
        ".data": ["DATASETS"],
        ".fid": [
            "FIDResult",
            "compute_fid",
            "frechet_distance",
            "frechet_distance_from_features",
            "inception_features",
        ],
        ".generators": ["ConvGenerator", "MLPGenerator", "make_generator"],
        ".losses": ["critic_objective", "generator_loss", "gradient_penalty"],
        ".trainer": [
            "GANConfig",
            "GANResult",
            "LoadedGenerator",
            "generate",
            "load_generator",
            "train_gan",
        ],
    },
)
