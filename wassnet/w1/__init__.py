"""The W1 job: W1 between two samples (certified) and between their distributions.

* :func:`estimate_w1` -- the estimator (:mod:`wassnet.w1.estimate`);
* :class:`SampleOptions` -- how the certified sample bracket is computed;
* :class:`PopulationOptions` -- how the population confidence bracket is computed
  (:mod:`wassnet.w1.population`, critics from :mod:`wassnet.w1.critic_fit`);
* :func:`train_dual` -- the critic training loop (maximizes the dual on minibatches;
  it lives in :mod:`wassnet.critics.training`, shared by every job);
* :class:`W1Result`, :class:`SampleBracket`, :class:`PopulationBracket` -- the results;
* :func:`sample_bracket`, :func:`choose_route` -- the sample engine on a
  :class:`wassnet.ot.TransportProblem`;
* :mod:`wassnet.w1.io` -- loading and validating point clouds;
* :mod:`wassnet.w1.plots` -- figures; :mod:`wassnet.w1.cli` -- ``wassnet estimate``.

The names are imported on first use (``import wassnet.w1`` does not import torch).
"""

from wassnet._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "wassnet.critics.training": ["DualFit", "DualTrainingOptions", "train_dual"],
        ".estimate": ["METRICS", "estimate_w1"],
        ".options": ["CRITICS", "ROUTES", "PopulationOptions", "SampleOptions"],
        ".population": ["population_bracket"],
        ".result": ["FoldScore", "PopulationBracket", "SampleBracket", "W1Result"],
        ".sample": ["choose_route", "sample_bracket"],
    },
)
