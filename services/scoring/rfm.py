"""RFM scores from exact population quintiles, kept live as customers change.

The population is three histograms (recency, frequency, monetary) of how many scored customers
have each value; a customer's change is -1 on its old values and +1 on its new ones, so nothing
is ever rescanned and several scoring instances can share one histogram in the database.

Score of a value v: 1 + floor(5 * below / n), where `below` counts customers with a strictly
lower value and n all scored customers. Tied customers always share a score (with CDNOW's half
of single buyers, every one of them gets F = 1). Higher is better on every dimension:
- R is keyed by the day of the last purchase, so a more recent buyer ranks higher (R reversed:
  5 = most recent) and the ranks do not drift as the clock moves;
- F is the number of orders;
- M is the net revenue, compared at 1% resolution (log-scale buckets of ratio 1.01): customers
  within 1% of each other count as tied, so an M score can differ from the exact one only for
  customers within 1% of a quintile cut point.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from services.scoring.counters import Counters

DIMENSIONS = ("r", "f", "m")
MONEY_RESOLUTION = 1.01


def money_bucket(amount: float) -> int:
    """Monotone bucket of an amount; buckets are 1% wide (amounts <= 0 share bucket 0)."""
    if amount <= 0:
        return 0
    return 1 + math.floor(math.log1p(amount) / math.log(MONEY_RESOLUTION))


@dataclass(frozen=True)
class RfmValues:
    """A customer's place in each histogram: last purchase day, orders, money bucket."""

    r: int
    f: int
    m: int

    @classmethod
    def of(cls, counters: Counters) -> RfmValues | None:
        if counters.last_purchase_at is None:
            return None
        return cls(
            r=counters.last_purchase_at.date().toordinal(),
            f=counters.order_count,
            m=money_bucket(counters.revenue_total),
        )

    def as_dict(self) -> dict[str, int]:
        return {"r": self.r, "f": self.f, "m": self.m}


def population_deltas(
    changes: Iterable[tuple[RfmValues | None, RfmValues | None]],
) -> dict[tuple[str, int], int]:
    """Net histogram change for (before, after) pairs of customers: (dimension, value) -> delta."""
    deltas: Counter[tuple[str, int]] = Counter()
    for before, after in changes:
        if before == after:
            continue
        for values, sign in ((before, -1), (after, +1)):
            if values is not None:
                for dimension, value in values.as_dict().items():
                    deltas[(dimension, value)] += sign
    return {key: delta for key, delta in deltas.items() if delta}


def score(below: int, total: int) -> int:
    """1..5 from how many of `total` customers have a strictly lower value."""
    if total <= 0:
        return 1
    return min(5, 1 + (5 * below) // total)


@dataclass(frozen=True)
class RfmScores:
    recency_days: int
    frequency: int
    monetary: float
    r: int
    f: int
    m: int


def rfm_scores(
    counters: Counters,
    below: Mapping[str, int],
    totals: Mapping[str, int],
    as_of: date,
) -> RfmScores | None:
    """The customer's RFM given, per dimension, the counts below its values and the totals."""
    if counters.last_purchase_at is None:
        return None
    return RfmScores(
        recency_days=(as_of - counters.last_purchase_at.date()).days,
        frequency=counters.order_count,
        monetary=round(counters.revenue_total, 2),
        r=score(below["r"], totals["r"]),
        f=score(below["f"], totals["f"]),
        m=score(below["m"], totals["m"]),
    )
