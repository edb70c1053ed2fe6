"""What the three jobs (W1, WGAN, classification) share about critics, in one place.

* :mod:`~wassnet.critics.factory`: the one factory, :func:`make_critic` (the presets of
  :data:`wassnet.names.ARCHS`, :data:`PRESETS`), which every job calls;
* :mod:`~wassnet.critics.builders`: the builders behind it (:func:`dense_critic`,
  :func:`conv_critic`, :func:`family_critic`, :func:`linf_dist_critic`) and the
  population bracket's smallest critics (:func:`linear_critic`, :func:`radial_critic`);
* :mod:`~wassnet.critics.families`: critic families as a registry
  (:class:`PopulationFamily`, :class:`FamilyRegistry`) and what a fit returns
  (:class:`FittedCritic`);
* :mod:`~wassnet.critics.training`: the one constrained-training set-up
  (:func:`setup_projected_training`), the one dual step (:func:`dual_step`) and the
  one dual-training loop (:func:`train_dual`);
* :mod:`~wassnet.critics.norm_estimates`: exact norm estimates for CPL layers
  (:func:`refine_norm_estimates_`, :func:`track_norm_estimates`).

Every critic is a plain ``nn.Sequential`` of wassnet layers, certified by
:func:`wassnet.nn.lipschitz_bound` from its weights, never assumed 1-Lipschitz.
Importing this package imports torch (``import wassnet`` loads it lazily).
"""

from wassnet.critics.builders import (
    conv_critic,
    dense_critic,
    family_critic,
    linear_critic,
    linf_dist_critic,
    radial_critic,
)
from wassnet.critics.factory import PRESETS, make_critic
from wassnet.critics.families import FamilyRegistry, FittedCritic, PopulationFamily
from wassnet.critics.norm_estimates import refine_norm_estimates_, track_norm_estimates
from wassnet.critics.training import (
    DualFit,
    DualStep,
    DualTrainingOptions,
    critic_values,
    dual_and_stderr,
    dual_step,
    setup_projected_training,
    train_dual,
)

__all__ = [
    "PRESETS",
    "DualFit",
    "DualStep",
    "DualTrainingOptions",
    "FamilyRegistry",
    "FittedCritic",
    "PopulationFamily",
    "conv_critic",
    "critic_values",
    "dense_critic",
    "dual_and_stderr",
    "dual_step",
    "family_critic",
    "linear_critic",
    "linf_dist_critic",
    "make_critic",
    "radial_critic",
    "refine_norm_estimates_",
    "setup_projected_training",
    "track_norm_estimates",
    "train_dual",
]
