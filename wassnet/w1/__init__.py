"""The W1 job: W1 between two samples (certified) and between their distributions.

* :func:`estimate_w1` -- the estimator (:mod:`wassnet.w1.estimate`);
* :class:`SampleOptions` -- how the certified sample bracket is computed;
* :class:`PopulationOptions` -- how the population confidence bracket is computed
  (:mod:`wassnet.w1.population`, critics from :mod:`wassnet.w1.critic_fit`);
* :class:`W1Result`, :class:`SampleBracket`, :class:`PopulationBracket` -- the results;
* :func:`sample_bracket`, :func:`choose_route` -- the sample engine on a
  :class:`wassnet.ot.TransportProblem`;
* :mod:`wassnet.w1.io` -- loading and validating point clouds;
* :mod:`wassnet.w1.plots` -- figures; :mod:`wassnet.w1.cli` -- ``wassnet estimate``.
"""

from wassnet.w1.estimate import METRICS, estimate_w1
from wassnet.w1.options import CRITICS, ROUTES, PopulationOptions, SampleOptions
from wassnet.w1.population import FoldScore, PopulationBracket, population_bracket
from wassnet.w1.result import SampleBracket, W1Result
from wassnet.w1.sample import choose_route, sample_bracket

__all__ = [
    "CRITICS",
    "METRICS",
    "ROUTES",
    "FoldScore",
    "PopulationBracket",
    "PopulationOptions",
    "SampleBracket",
    "SampleOptions",
    "W1Result",
    "choose_route",
    "estimate_w1",
    "population_bracket",
    "sample_bracket",
]
