"""Certified-robust classification with wassnet's 1-Lipschitz networks.

For a classifier with certified L2 Lipschitz bound ``L`` (computed from its weights by
:func:`wassnet.nn.lipschitz_bound`, never assumed) and logit margin ``m`` at ``x``, no
perturbation of L2 norm ``< m / (sqrt(2) L)`` changes its prediction.

* models: :func:`make_classifier`, :func:`load_classifier` (a :class:`LoadedClassifier`),
  :func:`export_classifier`
* losses: :func:`multiclass_hinge` (margin ``sqrt(2) * eps``),
  :func:`cross_entropy_with_temperature`
* certificates: :func:`certified_radius`, :func:`certified_accuracy`
* training: :class:`TrainConfig`, :func:`train_classifier` (resumable, atomic checkpoints:
  :mod:`wassnet.runs`); :func:`train_and_certify` (a :class:`TrainReport`: what
  ``wassnet classify train`` prints)
* empirical check: :func:`pgd` (l2, l1, l-inf), :func:`attack_certified` ("certified
  but broken: 0 of N"), with :class:`AttackOptions`
* all of it at once: :func:`evaluate` (an :class:`Evaluation`: bound, certified accuracy,
  attack, export check)

The names are imported on first use (``import wassnet.certify`` does not import torch).
"""

from wassnet._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".attack": ["AttackCheck", "AttackOptions", "attack_certified", "pgd"],
        ".evaluation": ["Evaluation", "evaluate"],
        ".losses": ["cross_entropy_with_temperature", "hinge_margin", "multiclass_hinge"],
        ".model": ["LoadedClassifier", "export_classifier", "load_classifier", "make_classifier"],
        ".radius": [
            "CertifiedAccuracy",
            "certified_accuracy",
            "certified_radius",
            "logit_margin",
            "margin_factor",
        ],
        ".train": [
            "TrainConfig",
            "TrainReport",
            "TrainResult",
            "train_and_certify",
            "train_classifier",
        ],
    },
)
