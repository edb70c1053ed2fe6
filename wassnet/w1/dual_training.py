"""Training a critic on the Kantorovich-Rubinstein dual (moved to
:mod:`wassnet.critics.training`, the one loop every job shares; kept importable here)."""

from wassnet.critics.training import (
    DualFit,
    DualTrainingOptions,
    Sampler,
    critic_values,
    dual_and_stderr,
    train_dual,
)

__all__ = [
    "DualFit",
    "DualTrainingOptions",
    "Sampler",
    "critic_values",
    "dual_and_stderr",
    "train_dual",
]
