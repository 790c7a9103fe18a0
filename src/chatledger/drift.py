"""Self-verifying accounting: what chatledger counted before sending, against what was billed.

``record()`` keeps the pre-send count and the request's rule families (``tokens.
request_features``) next to the billed ``prompt_tokens``. The API changes its rules without
notice; a deployment sees it here first: :func:`summarize` turns usage rows into drift per
model and per feature, and :class:`DriftWatch` logs a warning once per model when the counts
it records start to miss.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Drift", "DriftWatch", "summarize"]

logger = logging.getLogger("chatledger")

#: the row that sums every request of a model, whatever its features
ALL = "all"


@dataclass(frozen=True, slots=True)
class Drift:
    """How a model's pre-send counts compared with the billed prompt tokens.

    ``error`` is counted minus billed: negative is an under-count (a window that "fits" may
    not), positive an over-count (the safe side: estimates err high).
    """

    model: str
    feature: str
    requests: int
    exact: int
    under: int
    over: int
    mean_error: float
    #: the largest under-count seen (0 when none)
    worst_under: int
    #: the largest over-count seen (0 when none)
    worst_over: int

    @property
    def exact_share(self) -> float:
        return self.exact / self.requests if self.requests else 1.0


def summarize(rows: Iterable[tuple[str, int, int, Iterable[str]]]) -> list[Drift]:
    """Drift per model and feature from ``(model, counted, billed, features)`` rows; each
    model also gets an ``all`` row. Sorted by model, then ``all`` first, then feature."""
    errors: dict[tuple[str, str], list[int]] = defaultdict(list)
    for model, counted, billed, features in rows:
        err = counted - billed
        errors[(model, ALL)].append(err)
        for f in features:
            errors[(model, f)].append(err)
    out = [
        Drift(
            model=model,
            feature=feature,
            requests=len(errs),
            exact=sum(1 for e in errs if e == 0),
            under=sum(1 for e in errs if e < 0),
            over=sum(1 for e in errs if e > 0),
            mean_error=sum(errs) / len(errs),
            worst_under=-min(0, *errs),
            worst_over=max(0, *errs),
        )
        for (model, feature), errs in errors.items()
    ]
    return sorted(out, key=lambda d: (d.model, d.feature != ALL, d.feature))


class DriftWatch:
    """Warns once per model when recorded counts miss: over the last ``window`` requests, an
    under-count of more than ``tolerance`` tokens, or a mean absolute error above
    ``tolerance``. One per ledger; thread-safe."""

    def __init__(self, tolerance: int = 2, window: int = 20) -> None:
        self.tolerance, self.window = tolerance, window
        self._recent: dict[str, deque[int]] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def note(self, model: str, counted: int, billed: int) -> bool:
        """Record one request; True when this call logged the model's warning."""
        err = counted - billed
        with self._lock:
            recent = self._recent.setdefault(model, deque(maxlen=self.window))
            recent.append(err)
            if model in self._warned:
                return False
            mean_abs = sum(abs(e) for e in recent) / len(recent)
            if err >= -self.tolerance and (len(recent) < 5 or mean_abs <= self.tolerance):
                return False
            self._warned.add(model)
        logger.warning(
            "token counts for %s drift from what the API bills: counted %d, billed %d (mean "
            "absolute error %.1f over the last %d requests); budgets may not hold. See "
            "Ledger.token_drift() and docs/tokens.md",
            model,
            counted,
            billed,
            mean_abs,
            len(recent),
        )
        return True
