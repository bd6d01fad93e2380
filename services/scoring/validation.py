"""Calibration/holdout validation of BG/NBD, as the BTYD papers do it: fit on the purchases up to
`calibration_end`, then compare with what the same customers did up to `holdout_end` (weekly
and cumulative repeat purchases, holdout purchases by calibration repeat purchases and by
acquisition channel, mean absolute errors). Purchases are distinct purchase days."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from services.scoring.btyd import BgNbd, FitError, fit_bgnbd
from services.scoring.counters import WEEK_DAYS

GROUPS = 8  # calibration repeat purchases 0, 1, ..., 6, 7+


@dataclass(frozen=True)
class Week:
    start: date
    actual: int  # repeat purchases that week
    predicted: float
    cumulative_actual: int
    cumulative_predicted: float


@dataclass(frozen=True)
class Group:
    label: str  # calibration repeat purchases ("7+" for the last) or channel
    customers: int
    actual: float  # mean holdout purchases per customer
    predicted: float


@dataclass(frozen=True)
class Validation:
    calibration_end: date
    holdout_end: date
    holdout_weeks: float
    model: BgNbd
    customers: int
    calibration_repeat_purchases: int
    holdout_actual: int
    holdout_predicted: float
    weekly_mae: float  # mean |actual - predicted| weekly repeat purchases over the holdout
    customer_mae: float  # mean |actual - predicted| holdout purchases per customer
    weeks: list[Week]
    by_repeat_purchases: list[Group]
    by_channel: list[Group]


def validate(
    purchase_days: Iterable[tuple[str, Sequence[date]]],
    calibration_end: date,
    holdout_end: date,
    channels: Mapping[str, str] | None = None,
    model: BgNbd | None = None,
) -> Validation:
    """`purchase_days`: each customer's distinct purchase days in order. Customers who first
    bought after `calibration_end` are not in the cohort. `model`: the one to check (default:
    fitted on the calibration period)."""
    if not calibration_end < holdout_end:
        raise FitError("the holdout must end after the calibration period")
    first, x, t_x, holdout, channel = [], [], [], [], []
    repeats_on: Counter[int] = Counter()  # repeat purchases per day (ordinal), whole window
    for customer, days in purchase_days:
        if not days or days[0] > calibration_end:
            continue
        in_calibration = [d for d in days if d <= calibration_end]
        later = [d for d in days if calibration_end < d <= holdout_end]
        first.append(days[0].toordinal())
        x.append(len(in_calibration) - 1)
        t_x.append((in_calibration[-1] - days[0]).days / WEEK_DAYS)
        holdout.append(len(later))
        channel.append((channels or {}).get(customer, "other"))
        repeats_on.update(d.toordinal() for d in [*in_calibration[1:], *later])
    f = np.array(first, dtype=np.float64)
    xs, txs, hs = (np.array(v, dtype=np.float64) for v in (x, t_x, holdout))
    T = (calibration_end.toordinal() - f) / WEEK_DAYS
    model = model or fit_bgnbd(xs, txs, T)
    horizon = (holdout_end - calibration_end).days / WEEK_DAYS
    expected = model.conditional_expected_purchases(horizon, xs, txs, T)
    weeks = _tracking(model, f, repeats_on, calibration_end, holdout_end)
    holdout_weeks = [w for w in weeks if w.start > calibration_end]
    return Validation(
        calibration_end=calibration_end,
        holdout_end=holdout_end,
        holdout_weeks=horizon,
        model=model,
        customers=len(xs),
        calibration_repeat_purchases=int(xs.sum()),
        holdout_actual=int(hs.sum()),
        holdout_predicted=float(expected.sum()),
        weekly_mae=float(np.mean([abs(w.actual - w.predicted) for w in holdout_weeks])),
        customer_mae=float(np.mean(np.abs(hs - expected))),
        weeks=weeks,
        by_repeat_purchases=_groups(
            [str(int(v)) if v < GROUPS - 1 else f"{GROUPS - 1}+" for v in xs], hs, expected
        ),
        by_channel=_groups(channel, hs, expected),
    )


def _groups(labels: list[str], actual: np.ndarray, predicted: np.ndarray) -> list[Group]:
    members: defaultdict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        members[label].append(i)
    # "0".."6" sort as numbers (single digits), "7+" last; channels alphabetically
    return [
        Group(
            label,
            len(rows),
            float(actual[rows].mean()),
            float(predicted[rows].mean()),
        )
        for label, rows in sorted(members.items(), key=lambda kv: (kv[0].endswith("+"), kv[0]))
    ]


def _tracking(
    model: BgNbd,
    first: np.ndarray,
    repeats_on: Counter[int],
    calibration_end: date,
    holdout_end: date,
) -> list[Week]:
    """Weeks from the cohort's first purchase day, the last one ending on `holdout_end`;
    predicted cumulative repeat purchases = sum over customers of E[X(age at the week's end)],
    computed once per distinct first day."""
    start = int(first.min())
    end = holdout_end.toordinal()
    week_ends = [min(d, end) for d in range(start + 6, end + 7, 7)]
    starts, counts = np.unique(first, return_counts=True)
    ages = (np.array(week_ends, dtype=np.float64)[:, None] - starts[None, :]) / WEEK_DAYS
    by_age = model.expected_purchases_by_age(np.maximum(ages, 0.0))
    cumulative_predicted = (by_age * counts[None, :]).sum(axis=1).tolist()
    weeks, done, previous, before = [], 0, 0.0, start
    for day, cumulative in zip(week_ends, cumulative_predicted, strict=True):
        actual = sum(repeats_on.get(d, 0) for d in range(before, day + 1))
        done += actual
        weeks.append(
            Week(date.fromordinal(before), actual, cumulative - previous, done, cumulative)
        )
        previous, before = cumulative, day + 1
    return weeks
