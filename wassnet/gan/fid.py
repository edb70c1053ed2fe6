r"""Fréchet Inception Distance (Heusel et al. 2017) with pytorch-fid's Inception network.

.. math::
    \mathrm{FID} = \|\mu_r - \mu_g\|_2^2
        + \operatorname{tr}\big(\Sigma_r + \Sigma_g - 2 (\Sigma_r \Sigma_g)^{1/2}\big),

with :math:`\mu, \Sigma` the mean and covariance of the 2048-d pool3 features of
real and generated images. Images are quantized to 8 bits (as when pytorch-fid reads
PNG files), grey images are repeated to 3 channels, and pytorch-fid's
``InceptionV3([3])`` resizes them to 299x299 and maps them to ``[-1, 1]``.

The Inception weights come from, in this order: the ``weights_path`` argument, the
``WASSNET_FID_WEIGHTS`` environment variable, or pytorch-fid's own download (from
GitHub, cached under ``$TORCH_HOME``). A local file is a plain ``state_dict`` for
``pytorch_fid.inception.fid_inception_v3`` and is loaded with no network access.

FID depends on the number of samples (it is biased upwards for small N): compare
models only at equal N.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wassnet.checkpoint import load_torch_file
from wassnet.errors import CheckpointError, InputError

__all__ = [
    "FIDResult",
    "compute_fid",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "inception_features",
    "load_fid_inception",
]

WEIGHTS_ENV = "WASSNET_FID_WEIGHTS"


@dataclass(frozen=True)
class FIDResult:
    """An FID value with the sample sizes it was measured at and the weights used."""

    fid: float
    n_real: int
    n_fake: int
    weights: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"FID {self.fid:.3f} ({self.n_fake} generated vs {self.n_real} real images; "
            f"Inception weights: {self.weights})"
        )


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    r"""Fréchet distance between :math:`N(\mu_1, \Sigma_1)` and :math:`N(\mu_2, \Sigma_2)`.

    :math:`\operatorname{tr}(\Sigma_1\Sigma_2)^{1/2}` is computed as the sum of the square
    roots of the eigenvalues of the symmetric matrix
    :math:`\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}` (same spectrum as
    :math:`\Sigma_1\Sigma_2`), in float64 with tiny negative eigenvalues from rounding
    clipped to 0: no complex square root, and exact for singular covariances (N < d).
    The result (a squared distance) is clipped at 0 against rounding.
    Raises ``ValueError`` for mismatched shapes or non-finite input.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    s1, s2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise InputError(
            f"shapes do not match: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}"
        )
    if not all(np.isfinite(a).all() for a in (mu1, mu2, s1, s2)):
        raise InputError("means and covariances must be finite")
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    evals, evecs = np.linalg.eigh(s1)
    root1 = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T
    middle = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    # a squared distance: a tiny negative value can only be rounding
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``[N, d]`` features, ``N >= 2``."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise InputError(f"need [N, d] features with N >= 2, got shape {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance_from_features(x: np.ndarray, y: np.ndarray) -> float:
    r"""Fréchet distance between the Gaussians fitted to features ``x`` [n, d] and ``y`` [m, d].

    Equal to ``frechet_distance(*feature_statistics(x), *feature_statistics(y))``, but
    when ``n`` or ``m`` is below ``d`` (e.g. 1000 images, 2048 features) it avoids the
    d x d eigendecompositions: with centred ``A``, ``B`` and
    :math:`\Sigma_x = A^\top A / (n-1)`, :math:`\Sigma_y = B^\top B / (m-1)`, the
    nonzero eigenvalues of :math:`\Sigma_x \Sigma_y` are the squared singular values of
    :math:`A B^\top / \sqrt{(n-1)(m-1)}`, so
    :math:`\operatorname{tr}(\Sigma_x\Sigma_y)^{1/2} = \|A B^\top\|_* / \sqrt{(n-1)(m-1)}`
    (nuclear norm of an n x m matrix). Exact, in float64.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise InputError(
            f"need [n, d] and [m, d] features with n, m >= 2, got {x.shape}, {y.shape}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError("features must be finite")
    n, m, d = len(x), len(y), x.shape[1]
    if min(n, m) >= d:
        return frechet_distance(*feature_statistics(x), *feature_statistics(y))
    mu_x, mu_y = x.mean(0), y.mean(0)
    a, b = x - mu_x, y - mu_y
    tr_x = (a * a).sum() / (n - 1)
    tr_y = (b * b).sum() / (m - 1)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = mu_x - mu_y
    value = diff @ diff + tr_x + tr_y - 2 * nuclear / np.sqrt((n - 1) * (m - 1))
    return max(0.0, float(value))


def _resolve_weights(weights_path: str | os.PathLike[str] | None) -> Path | None:
    chosen = weights_path if weights_path is not None else os.environ.get(WEIGHTS_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if path.is_dir():
        found = sorted(path.glob("pt_inception-2015-12-05*.pth"))
        if not found:
            raise FileNotFoundError(
                f"no pt_inception-2015-12-05*.pth file in FID weights folder {str(path)!r}"
            )
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights {str(path)!r} do not exist")
    return path


def load_fid_inception(
    weights_path: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, str]:
    """pytorch-fid's ``InceptionV3([3])`` (pool3 features) in eval mode, and its weight source.

    ``weights_path`` (a ``.pth`` state_dict, or a folder holding
    ``pt_inception-2015-12-05*.pth``) or ``$WASSNET_FID_WEIGHTS`` loads local weights
    without network access; otherwise pytorch-fid downloads its weights as usual.
    """
    from unittest import mock

    from pytorch_fid import inception

    from wassnet.runtime import resolve_device

    path = _resolve_weights(weights_path)
    if path is None:
        model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        source = "pytorch-fid download"
    else:
        weights = load_torch_file(path, "FID Inception weights")
        if not isinstance(weights, dict) or not all(
            isinstance(v, torch.Tensor) for v in weights.values()
        ):
            raise CheckpointError(
                f"{str(path)!r} is not FID Inception weights (not a state_dict of tensors)"
            )
        try:
            # fid_inception_v3() builds the FID architecture, then fetches the weights
            # from a URL: the fetch (and only it) is replaced by the local file.
            with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: weights):
                model = inception.InceptionV3([3])
        except RuntimeError:  # load_state_dict: missing / unexpected / mis-shaped tensors
            raise CheckpointError(
                f"{str(path)!r} is not pytorch-fid's Inception weights (its tensors do not "
                "fit the FID network)"
            ) from None
        source = str(path)
    return model.to(resolve_device(device)).eval(), source


def inception_features(
    images: torch.Tensor, model: nn.Module, batch_size: int = 50, progress: bool = False
) -> np.ndarray:
    """Pool3 features ``[N, 2048]`` (float64) of images ``[N, C, H, W]`` in ``[0, 1]``."""
    from tqdm.auto import tqdm

    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise InputError(f"need images [N, 1 or 3, H, W], got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise InputError("images contain NaN or inf")
    device = next(model.parameters()).device
    feats = []
    with torch.no_grad():
        starts = range(0, len(images), batch_size)
        for i in tqdm(starts, desc="Inception", unit="batch", disable=not progress):
            x = images[i : i + batch_size].float().clamp(0, 1)
            x = torch.round(x * 255) / 255  # as if read back from 8-bit PNG files
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            feats.append(model(x.to(device))[0].flatten(1).double().cpu())
    return torch.cat(feats).numpy()


def compute_fid(
    real: torch.Tensor,
    fake: torch.Tensor,
    weights_path: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 50,
    model: tuple[nn.Module, str] | None = None,
    progress: bool = False,
) -> FIDResult:
    """FID between two sets of images ``[N, C, H, W]`` in ``[0, 1]`` (N >= 2 each).

    ``model`` reuses a :func:`load_fid_inception` result across calls.
    """
    net, source = model if model is not None else load_fid_inception(weights_path, device)
    fid = frechet_distance_from_features(
        inception_features(real, net, batch_size, progress),
        inception_features(fake, net, batch_size, progress),
    )
    return FIDResult(fid, len(real), len(fake), source)
