"""A wall-clock budget, started once at the beginning of a call and passed down.

:class:`Deadline` is created where the user's clock starts (the CLI command, before
its inputs are loaded; :func:`wassnet.estimate_w1` when called from Python) and handed
to every stage. A stage asks :meth:`Deadline.allows` before starting work it cannot
interrupt (with the work's predicted seconds), checks :meth:`Deadline.expired` between
the pieces of work it can interrupt (tiles, levels, blocks, rounds), and records what
the budget cut with :meth:`Deadline.cut`, so that the result can say what the budget
allowed. A deadline without a budget allows everything and never expires.

Importing this module imports neither torch nor NumPy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

__all__ = ["Deadline"]


@dataclass
class Deadline:
    """``seconds`` of wall-clock time from ``start`` (``time.perf_counter()``).

    Attributes:
        seconds: the budget; ``None``: no limit.
        start: when the clock started (``time.perf_counter()`` seconds).
        cuts: plain sentences, in order, about work the budget skipped or stopped.
    """

    seconds: float | None = None
    start: float = field(default_factory=time.perf_counter)
    cuts: list[str] = field(default_factory=list)

    @property
    def limited(self) -> bool:
        """Whether there is a budget at all."""
        return self.seconds is not None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        """Seconds left (``math.inf`` without a budget; negative once overrun)."""
        if self.seconds is None:
            return math.inf
        return self.seconds - self.elapsed()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def allows(self, predicted: float, reserve: float = 0.0) -> bool:
        """Whether work predicted to take ``predicted`` seconds ends in time, leaving
        ``reserve`` seconds for what must follow it."""
        return predicted + reserve <= self.remaining()

    def cut(self, sentence: str) -> None:
        """Record that the budget skipped or stopped some work (said in the result)."""
        if sentence not in self.cuts:
            self.cuts.append(sentence)

    def share(self, fraction: float) -> Deadline:
        """A deadline that ends once ``fraction`` of the time left now is spent (for a
        stage that must leave time to the stages after it); cuts are shared."""
        if self.seconds is None:
            return self
        left = max(self.remaining(), 0.0)
        return Deadline(self.elapsed() + fraction * left, self.start, self.cuts)

    def describe(self) -> str | None:
        """One sentence saying what the budget allowed (``None`` without a budget)."""
        if self.seconds is None:
            return None
        if not self.cuts:
            return f"time budget {self.seconds:g} s: everything asked for fit"
        return f"time budget {self.seconds:g} s reached: " + "; ".join(self.cuts)
