r"""Verified upper bounds on spectral norms, in float64, with a proof per step.

:func:`spectral_norm_upper` bounds :math:`\max_b \|A_b + E_b\|_2` for a batch of real or
complex matrices :math:`A_b` and any perturbations with
:math:`\|E_b\|_F \le \epsilon_b` (the caller's own rounding, e.g. of a DFT). Steps, with
:math:`u = 2^{-53}` and Higham's :math:`\gamma_k = k u / (1 - k u)`:

1. :math:`\hat G = \mathrm{fl}(A^H A)` (the smaller Gram side): each entry is a sum of
   :math:`k` products, so :math:`|\hat G - G| \le \gamma_{k+2} |A|^H |A|` entrywise
   (complex products take two more roundings) and
   :math:`\|\hat G - G\|_2 \le \gamma_{k+2} \|A\|_F^2`.
2. An eigendecomposition :math:`\hat G \approx V \Lambda V^H` (LAPACK, not trusted):
   :math:`\hat M = \mathrm{fl}(V^H (\hat G V))` is within
   :math:`\gamma_{2n+4} |V|^H |\hat G| |V|` of :math:`V^H \hat G V`, which is
   Hermitian, so by Gershgorin
   :math:`\lambda_{\max}(V^H \hat G V) \le \max_i \big(\hat M_{ii} + \sum_{j \ne i} |\hat M_{ij}|
   + \sum_j R_{ij}\big) =: \mu` with :math:`R` that error bound.
3. :math:`V` need not be unitary: with :math:`\delta \ge \|V^H V - I\|_2` (bounded the
   same way), :math:`x = V y` gives
   :math:`x^H \hat G x \le \mu \|y\|^2 \le \mu \|x\|^2 / (1 - \delta)`, so
   :math:`\lambda_{\max}(\hat G) \le \mu / (1 - \delta)` (for :math:`\mu \ge 0`).
4. :math:`\|A\|_2^2 = \lambda_{\max}(G) \le \lambda_{\max}(\hat G) + \|\hat G - G\|_2` and
   :math:`\|A + E\|_2 \le \|A\|_2 + \|E\|_F`.

The matrices are first multiplied by one power of two so that their largest entry lies
in ``[1/2, 1)`` (exact; entries pushed into the subnormal range move by at most
``2^-1075`` each, charged to ``E``), so nothing overflows and underflow is a charged
absolute error (``2^-1074`` per product) instead of a silent loss. Scalar steps are
rounded up (:func:`math.nextafter`). The only assumption is IEEE arithmetic with a
standard (backward-stable per entry) matrix product, as every BLAS provides; LAPACK's
accuracy is never relied on. The result exceeds the exact norm by a few ``1e-15``
relative. Non-finite entries raise ``ValueError``.
"""

from __future__ import annotations

import math

import torch

from wassnet.errors import InputError

__all__ = ["spectral_norm_upper"]

_U = 2.0**-53
_ETA = 2.0**-1074  # absolute error of a product that underflows


def _gamma(k: int) -> float:
    return math.nextafter(2.0 * k * _U, math.inf)  # >= gamma_k for k u <= 1/2


def _up(x: float) -> float:
    return math.nextafter(x, math.inf)


@torch.no_grad()
def _gram(a: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """``(G_hat, eps, k)``: the smaller Gram matrix, a bound on ``||G_hat - G||_2`` per
    batch (as a tensor), and the inner dimension."""
    m, n = a.shape[-2:]
    extra = 2 if a.is_complex() else 0
    if n <= m:
        g, k = a.mH @ a, m
    else:
        g, k = a @ a.mH, n
    frob_sq = (a.abs() ** 2).sum((-2, -1))
    eps = _gamma(k + extra + 2) * frob_sq * (1.0 + _gamma(m * n + 1))
    eps = eps + 4.0 * (k + extra + 2) * min(m, n) * _ETA  # underflowing products
    return g, eps, k


@torch.no_grad()
def _gershgorin_upper(g: torch.Tensor) -> torch.Tensor:
    """Per batch, a proven upper bound on ``lambda_max(g)`` (``g`` Hermitian, float64)."""
    n = g.shape[-1]
    _, v = torch.linalg.eigh(g)
    extra = 4 if g.is_complex() else 0
    m_hat = v.mH @ (g @ v)
    err = _gamma(2 * n + 4 + extra) * (v.abs().mT @ (g.abs() @ v.abs())) + 8 * n * _ETA
    diag = m_hat.diagonal(dim1=-2, dim2=-1).real
    off = m_hat.abs().sum(-1) - m_hat.diagonal(dim1=-2, dim2=-1).abs()
    slack = _gamma(2 * n + 2)
    mu = (diag + (off + err.sum(-1)) * (1 + slack)).amax(-1)
    mu = mu + mu.abs() * slack  # the last additions' rounding
    # delta >= ||V^H V - I||_2, bounded by the Frobenius norm of the computed residual
    # plus the product's rounding
    eye = torch.eye(n, dtype=v.dtype, device=v.device)
    residual = v.mH @ v - eye
    round_err = _gamma(n + 2 + extra) * (v.abs().mT @ v.abs()) + 8 * n * _ETA
    delta = ((residual.abs() + round_err) ** 2).sum((-2, -1)).sqrt() * (1 + 4 * slack)
    if bool((delta >= 0.5).any()):
        raise ArithmeticError("eigenvectors too far from unitary for a verified bound")
    return torch.where(mu > 0, mu / (1 - delta) * (1 + 4 * _U), mu)


def _ldexp(t: torch.Tensor, exponent: int) -> torch.Tensor:
    """``t * 2^exponent`` (exact unless it over- or underflows), real or complex."""
    e = torch.tensor(exponent)
    if t.is_complex():
        return torch.complex(torch.ldexp(t.real, e), torch.ldexp(t.imag, e))
    return torch.ldexp(t, e)


@torch.no_grad()
def spectral_norm_upper(matrices: torch.Tensor, perturbation: torch.Tensor | float = 0.0) -> float:
    """A proven upper bound on ``max_b ||A_b + E_b||_2`` over ``||E_b||_F <= perturbation_b``.

    Args:
        matrices: ``[m, n]`` or ``[batch, m, n]``, real or complex (computed in float64
            or complex128).
        perturbation: a bound on the Frobenius norm of each matrix's error (scalar or
            ``[batch]``).
    """
    a = matrices.detach().to("cpu")
    a = a.to(torch.complex128 if a.is_complex() else torch.float64)
    if a.dim() == 2:
        a = a[None]
    pert = torch.as_tensor(perturbation, dtype=torch.float64).expand(len(a))
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(pert).all())):
        raise InputError("spectral_norm_upper: the matrix has non-finite entries")
    if a.numel() == 0 or not bool((a != 0).any()):
        return _up(float(pert.max())) if len(pert) else 0.0
    # one exact power-of-two scale: the largest entry in [1/2, 1)
    exponent = math.frexp(float(a.abs().max()))[1]
    scaled = _ldexp(a, -exponent)
    exact = bool((_ldexp(scaled, exponent) == a).all())
    moved = 0.0 if exact else math.sqrt(a.shape[-1] * a.shape[-2]) * 2.0**-1073
    g, eps, _ = _gram(scaled)
    lam = _gershgorin_upper(g)
    norm_sq = (lam.clamp_min(0) + eps) * (1 + 4 * _U)
    norm = norm_sq.sqrt() * (1 + 2 * _U) + moved
    bound = (_ldexp(norm, exponent) + pert) * (1 + 2 * _U)
    result = _up(float(bound.max()))
    if not math.isfinite(result):
        raise InputError("spectral_norm_upper: the norm exceeds the float64 range")
    return result
