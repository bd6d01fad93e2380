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
        half_life_days = HALF_LIFE / timedelta(days=1)
        decay = [0.5 ** (age / half_life_days) for age in ages_days]
        return [d / sum(decay) for d in decay]
    if model == "position_based":
        if n <= 2:
            return [1.0 / n] * n
        return [0.4 if i in (0, n - 1) else 0.2 / (n - 2) for i in range(n)]
    raise ValueError(f"unknown attribution model {model!r}; one of {', '.join(MODELS)}")


def credits(path: Sequence[Touch], converted_at: datetime) -> dict[str, tuple[float, ...]]:
    """Each channel's share of one conversion under every model, in MODELS order (one pass:
    the engine stores this for every stage entry)."""
    if not path:
        return {}
    channels = {t.channel for t in path}
    if len(channels) == 1:  # most entries (one touch, or one channel): all of it, in every model
        return {channels.pop(): (1.0,) * len(MODELS)}
    touches = sorted(path)
    ages = [(converted_at - t.at) / timedelta(days=1) for t in touches]
    ties: list[list[int]] = []  # runs of touches at the same instant (adjacent once sorted)
    for i, touch in enumerate(touches):
        if i and touch.at == touches[i - 1].at:
            ties[-1].append(i)
        else:
            ties.append([i])
    shares: dict[str, list[float]] = {}
    for m, model in enumerate(MODELS):
        raw = weights(model, len(touches), ages)
        for run in ties:
            share = sum(raw[i] for i in run) / len(run)
            for i in run:
                shares.setdefault(touches[i].channel, [0.0] * len(MODELS))[m] += share
    return {channel: tuple(v) for channel, v in sorted(shares.items())}


def credit(model: str, path: Sequence[Touch], converted_at: datetime) -> dict[str, float]:
    """Each channel's share of one conversion under `model` (empty for an empty path)."""
    if model not in MODELS:
        raise ValueError(f"unknown attribution model {model!r}; one of {', '.join(MODELS)}")
    index = MODELS.index(model)
    return {channel: v[index] for channel, v in credits(path, converted_at).items()}
