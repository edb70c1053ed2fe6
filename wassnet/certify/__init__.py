"""Certified-robust classification with wassnet's 1-Lipschitz networks.

For a classifier with certified L2 Lipschitz bound ``L`` (computed from its weights by
:func:`wassnet.nn.lipschitz_bound`, never assumed) and logit margin ``m`` at ``x``, no
perturbation of L2 norm ``< m / (sqrt(2) L)`` changes its prediction.

* models: :func:`make_classifier`, :func:`load_classifier`, :func:`export_classifier`
* losses: :func:`multiclass_hinge` (margin ``sqrt(2) * eps``),
  :func:`cross_entropy_with_temperature`
* certificates: :func:`certified_radius`, :func:`certified_accuracy`
* training: :class:`TrainConfig`, :func:`train_classifier` (resumable, atomic checkpoints)
* empirical check: :func:`pgd_l2`, :func:`attack_certified` ("certified but broken: 0 of N")
"""

from wassnet.certify.attack import AttackCheck, attack_certified, pgd_l2
from wassnet.certify.losses import (
    cross_entropy_with_temperature,
    hinge_margin,
    multiclass_hinge,
)
from wassnet.certify.model import export_classifier, load_classifier, make_classifier
from wassnet.certify.radius import (
    CertifiedAccuracy,
    certified_accuracy,
    certified_radius,
    logit_margin,
)
from wassnet.certify.train import TrainConfig, TrainResult, train_classifier

__all__ = [
    "AttackCheck",
    "CertifiedAccuracy",
    "TrainConfig",
    "TrainResult",
    "attack_certified",
    "certified_accuracy",
    "certified_radius",
    "cross_entropy_with_temperature",
    "export_classifier",
    "hinge_margin",
    "load_classifier",
    "logit_margin",
    "make_classifier",
    "multiclass_hinge",
    "pgd_l2",
    "train_classifier",
]
