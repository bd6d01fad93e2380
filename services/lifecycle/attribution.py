"""Attribution models (pure): how one conversion's credit is shared by the touches before it.

The touches are a conversion's touch path: every touch within the lookback window up to the
conversion, oldest first. Credit always sums to 1 over a non-empty path:

- first_touch: all to the earliest touch; last_touch: all to the latest;
- linear: equal shares;
- time_decay: each touch weighs 2^(-age / 7 days) (age = conversion time - touch time), shares
  are the weights normalised to 1;
- position_based: 40% first, 40% last, 20% shared by the touches between (one touch: 100%;
  two: 50/50).

Touches at the same instant have no order between them: they share their combined credit
equally (two first touches at the same time get half the first-touch credit each).

`services/lifecycle/conversion.py` computes the same in SQL for whole populations; this module
is the definition the tests hold it to.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from services.lifecycle.journey import Touch

MODELS = ("first_touch", "last_touch", "linear", "time_decay", "position_based")
HALF_LIFE = timedelta(days=7)


def weights(model: str, n: int, ages_days: Sequence[float]) -> list[float]:
    """Raw credit of each of `n` touches in time order (ages in days, for time_decay)."""
    if model == "first_touch":
        return [1.0 if i == 0 else 0.0 for i in range(n)]
    if model == "last_touch":
        return [1.0 if i == n - 1 else 0.0 for i in range(n)]
    if model == "linear":
        return [1.0 / n] * n
    if model == "time_decay":
        decay = [0.5 ** (age / (HALF_LIFE / timedelta(days=1))) for age in ages_days]
        return [d / sum(decay) for d in decay]
    if model == "position_based":
        if n <= 2:
            return [1.0 / n] * n
        return [0.4 if i in (0, n - 1) else 0.2 / (n - 2) for i in range(n)]
    raise ValueError(f"unknown attribution model {model!r}; one of {', '.join(MODELS)}")


def credit(model: str, path: Sequence[Touch], converted_at: datetime) -> dict[str, float]:
    """Each channel's share of one conversion (empty for an empty path)."""
    touches = sorted(path)
    if not touches:
        return {}
    ages = [(converted_at - t.at) / timedelta(days=1) for t in touches]
    raw = weights(model, len(touches), ages)
    by_instant: dict[datetime, list[float]] = defaultdict(list)
    for touch, weight in zip(touches, raw, strict=True):
        by_instant[touch.at].append(weight)
    shares: dict[str, float] = defaultdict(float)
    for touch in touches:
        tied = by_instant[touch.at]
        shares[touch.channel] += sum(tied) / len(tied)
    return dict(shares)
