"""Certified 1-Lipschitz building blocks.

* activations: :class:`GroupSort`, :class:`MaxMin`, :class:`FullSort`,
  :class:`NormPool` (group norms); :class:`Translate` (a learned offset)
* orthogonal dense layers: :func:`bjorck` (a parametrization for any ``nn.Linear``),
  :class:`BjorckLinear`, :func:`bjorck_orthonormalize`
* orthogonal convolutions: :class:`BCOPConv2d`
* rescaled layers: :class:`AOLLinear`, :class:`AOLConv2d`, :func:`aol` (AOL, a
  parametrization for any ``nn.Linear`` / ``nn.Conv2d``)
* residual layers ``x - W^T diag(r) relu(W x + b)``: :class:`CPLLinear`,
  :class:`CPLConv2d` (convex potential layers), :class:`SLLLinear`, :class:`SLLConv2d`
  (SDP-based Lipschitz layers), and the plain :class:`ConvexResidualLinear` /
  :class:`ConvexResidualConv2d` they export to (:mod:`wassnet.nn.residual`: the rules)
* l-inf-distance neurons: :class:`LinfDistLinear` (``||x - w||_p + b``, ``p`` annealed
  to ``inf``: :func:`relaxation_p`, :func:`set_relaxation_p_`), :class:`MeanShift` (the
  paper's normalization), :func:`linf_dist` (the compiled kernel) (:mod:`wassnet.nn.linf`)
* certificates: :func:`lipschitz_bound` in l2, l1 or l-inf (per-layer breakdown in a
  :class:`LipschitzCertificate`), :func:`check_faithful` (refuses modules whose
  function may differ from their type's), :func:`spectral_norm_upper` (verified
  norms), :func:`power_iteration_norm`
* constraint by projection: :func:`constrain` (project after every optimizer step),
  :func:`project_`, :func:`project_l1_ball_`, :func:`permutation_init_` (the start for
  l1 projection) (:mod:`wassnet.nn.projection`)
* deployment: :func:`export` to plain torch layers
"""

from wassnet.nn.activations import FullSort, GroupSort, MaxMin, NormPool, Translate
from wassnet.nn.aol import AOLConv2d, AOLLinear, AOLRescale, aol
from wassnet.nn.bcop import BCOPConv2d, BCOPKernel
from wassnet.nn.bjorck import BjorckLinear, BjorckOrthonormalize, bjorck, bjorck_orthonormalize
from wassnet.nn.cpl import CPLConv2d, CPLLinear
from wassnet.nn.export import export
from wassnet.nn.linf import (
    LinfDistLinear,
    MeanShift,
    linf_dist,
    relaxation_p,
    set_relaxation_p_,
)
from wassnet.nn.lipschitz import (
    NORMS,
    LayerBound,
    LipschitzBoundError,
    LipschitzCertificate,
    check_faithful,
    conv2d_operator_norm,
    lipschitz_bound,
    norm_key,
    norm_name,
    norm_p,
    norm_ratio,
    power_iteration_norm,
    register_lipschitz_rule,
)
from wassnet.nn.projection import constrain, permutation_init_, project_, project_l1_ball_
from wassnet.nn.residual import ConvexResidualConv2d, ConvexResidualLinear
from wassnet.nn.sll import SLLConv2d, SLLLinear
from wassnet.nn.spectral import spectral_norm_upper

__all__ = [
    "NORMS",
    "AOLConv2d",
    "AOLLinear",
    "AOLRescale",
    "BCOPConv2d",
    "BCOPKernel",
    "BjorckLinear",
    "BjorckOrthonormalize",
    "CPLConv2d",
    "CPLLinear",
    "ConvexResidualConv2d",
    "ConvexResidualLinear",
    "FullSort",
    "GroupSort",
    "LayerBound",
    "LinfDistLinear",
    "LipschitzBoundError",
    "LipschitzCertificate",
    "MaxMin",
    "MeanShift",
    "NormPool",
    "SLLConv2d",
    "SLLLinear",
    "Translate",
    "aol",
    "bjorck",
    "bjorck_orthonormalize",
    "check_faithful",
    "constrain",
    "conv2d_operator_norm",
    "export",
    "linf_dist",
    "lipschitz_bound",
    "norm_key",
    "norm_name",
    "norm_p",
    "norm_ratio",
    "permutation_init_",
    "power_iteration_norm",
    "project_",
    "project_l1_ball_",
    "register_lipschitz_rule",
    "relaxation_p",
    "set_relaxation_p_",
    "spectral_norm_upper",
]
