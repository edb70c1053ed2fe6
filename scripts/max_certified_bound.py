"""Largest certified Lipschitz bound over the scenarios of the tests (random inits,
Adam steps pushing the slope up, all critic presets, BCOP k in {2,3,4,6}).

    python scripts/max_certified_bound.py
"""

import sys

import torch

sys.path.insert(0, "tests")
import test_lipschitz as T

from wassnet import make_critic
from wassnet.critics import PRESETS
from wassnet.nn import BCOPConv2d, lipschitz_bound

torch.manual_seed(0)
worst = 0.0
for idx in range(4):
    name, critic, shape = T._random_critics()[idx]
    opt = torch.optim.Adam(critic.parameters(), lr=0.05)
    for _ in range(10):
        worst = max(worst, lipschitz_bound(critic, shape).bound)
        opt.zero_grad()
        (-(critic(torch.randn(16, *shape)) ** 2).mean()).backward()
        opt.step()
    worst = max(worst, lipschitz_bound(critic, shape).bound)
for arch in PRESETS:
    worst = max(worst, lipschitz_bound(make_critic(arch, (1, 28, 28), 10), (1, 28, 28)).bound)
for mode in ("circular", "zeros"):
    for k in (2, 3, 4, 6):
        worst = max(worst, lipschitz_bound(BCOPConv2d(3, 5, k, padding_mode=mode), (3, 9, 9)).bound)
print(f"largest certified bound: {worst:.10f} (excess {worst - 1:.2e})")
