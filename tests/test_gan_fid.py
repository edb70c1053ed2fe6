"""FID: the Fréchet distance formula on known Gaussians, and the Inception pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from wassnet.gan.fid import (
    compute_fid,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    inception_features,
    load_fid_inception,
)

WEIGHTS = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "fid"
    / "pt_inception-2015-12-05-converted.pth"
)


def _spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_one_dimensional_gaussians() -> None:
    # W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2
    fd = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-0.5]), np.array([[0.25]]))
    assert fd == pytest.approx(1.5**2 + (2.0 - 0.5) ** 2, rel=1e-12)


def test_diagonal_gaussians() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    v1, v2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected)


def test_general_covariances_match_sqrtm() -> None:
    rng = np.random.default_rng(1)
    s1, s2 = _spd(12, rng), _spd(12, rng)
    mu1, mu2 = rng.standard_normal(12), rng.standard_normal(12)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-9)
    # the distance is symmetric
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)


def test_singular_covariances_from_few_samples() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 30))  # N < d: rank-deficient covariance
    mu, sigma = feature_statistics(x)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-6 * np.trace(sigma))
    y = x + np.arange(30) / 30  # a shift of the mean only: FD = |shift|^2
    mu_y, sigma_y = feature_statistics(y)
    assert frechet_distance(mu, sigma, mu_y, sigma_y) == pytest.approx(
        ((np.arange(30) / 30) ** 2).sum(), rel=1e-6, abs=1e-5
    )


@pytest.mark.parametrize(("n", "m"), [(7, 12), (40, 60), (300, 200)])
def test_features_route_equals_covariance_route(n: int, m: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 50)) @ rng.standard_normal((50, 50))
    y = 0.3 + rng.standard_normal((m, 50)) * np.linspace(0.2, 2, 50)
    expected = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert frechet_distance_from_features(x, y) == pytest.approx(expected, rel=1e-8)


def test_bad_statistics() -> None:
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="finite"):
        frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 4)))


def test_missing_or_corrupt_weights(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_fid_inception(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="do not fit the FID network"):
        load_fid_inception(bad)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"FID Inception weights .* the file is empty"):
        load_fid_inception(tmp_path / "empty.pth")
    (tmp_path / "text.pth").write_text("these are not weights\n")
    with pytest.raises(ValueError, match="not a torch file"):
        load_fid_inception(tmp_path / "text.pth")


@pytest.mark.skipif(not WEIGHTS.exists(), reason="no local FID Inception weights")
def test_fid_on_a_few_images(one_thread) -> None:
    model = load_fid_inception(WEIGHTS, "cpu")
    assert model[1] == str(WEIGHTS)
    gen = torch.Generator().manual_seed(0)
    smooth = torch.linspace(0, 1, 28).expand(4, 1, 28, 28).contiguous()
    smooth = smooth * torch.rand(4, 1, 1, 1, generator=gen)
    noise = torch.rand(4, 1, 28, 28, generator=gen)
    feats = inception_features(torch.cat([smooth, noise]), model[0], batch_size=3)
    assert feats.shape == (8, 2048) and np.isfinite(feats).all()
    # batching does not change the features
    alone = inception_features(smooth[:1], model[0], batch_size=1)
    np.testing.assert_allclose(alone, feats[:1], rtol=1e-4, atol=1e-5)

    scale = np.trace(np.cov(feats[:4], rowvar=False))
    assert frechet_distance_from_features(feats[:4], feats[:4]) == pytest.approx(
        0, abs=1e-9 * scale
    )
    apart = compute_fid(smooth, noise, model=model)
    assert apart.fid > 10 and (apart.n_real, apart.n_fake) == (4, 4)
    assert apart.fid == pytest.approx(
        frechet_distance_from_features(feats[:4], feats[4:]), rel=1e-6
    )
