"""Fitting the value models over all customers, and each customer's predicted value from the
stored parameters at read time."""

from __future__ import annotations

import json
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import groupby
from typing import Any

import numpy as np
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from services.scoring import metrics as own_metrics
from services.scoring import queries
from services.scoring.btyd import (
    BgNbd,
    FitError,
    GammaGamma,
    fit_bgnbd,
    fit_gamma_gamma,
    predicted_clv,
)
from services.scoring.counters import WEEK_DAYS, Counters
from services.scoring.validation import Validation, validate


def summaries(session: Session, observation_end: date) -> tuple[np.ndarray, ...]:
    """x, t_x, T (weeks), mean repeat spend and first day per customer, from purchase days
    up to `observation_end` (later purchases are ignored by the fit). Collected as C doubles, not
    lists of Python floats: at 1M customers that is 40 MB instead of 160 MB."""
    x, t_x, T, m, first_days = (array("d") for _ in range(5))
    rows = queries.purchase_days(session, observation_end)
    for _, days in groupby(rows, key=lambda row: row.customer_id):
        history = list(days)
        first, last = history[0].day, history[-1].day
        repeats = len(history) - 1
        x.append(repeats)
        t_x.append((last - first).days / WEEK_DAYS)
        T.append((observation_end - first).days / WEEK_DAYS)
        m.append(sum(d.net for d in history[1:]) / repeats if repeats else 0.0)
        first_days.append(first.toordinal())
    return tuple(np.frombuffer(v, dtype=np.float64) for v in (x, t_x, T, m, first_days))


def refit(session: Session, observation_end: date) -> dict[str, Any]:
    """Fit BG/NBD and Gamma-Gamma over every customer; the row to store (with the error, if the
    data cannot support a fit)."""
    started = time.perf_counter()
    x, t_x, T, m, first_days = summaries(session, observation_end)
    row: dict[str, Any] = {
        "fitted_at": datetime.now(UTC),
        "observation_end": observation_end,
        "data_from": date.fromordinal(int(first_days.min())) if len(first_days) else None,
        "n_customers": len(x),
        "n_repeat_buyers": int((x > 0).sum()),
        "error": None,
    }
    try:
        bg = fit_bgnbd(x, t_x, T)
        gg = fit_gamma_gamma(x, m)
    except FitError as exc:
        row["error"] = str(exc)
    else:
        row |= {
            "r": bg.r,
            "alpha": bg.alpha,
            "a": bg.a,
            "b": bg.b,
            "bgnbd_log_likelihood": bg.log_likelihood,
            "p": gg.p,
            "q": gg.q,
            "gamma": gg.gamma,
            "gamma_gamma_log_likelihood": gg.log_likelihood,
            "boundary": json.dumps([*bg.boundary, *gg.boundary]),
        }
    row["fit_seconds"] = time.perf_counter() - started
    own_metrics.REFIT_SECONDS.observe(row["fit_seconds"])
    own_metrics.REFITS.labels("failed" if row["error"] else "fitted").inc()
    return row


def validation(session: Session, calibration_end: date, holdout_end: date) -> Validation:
    """Fit on the purchases up to `calibration_end` and compare with the holdout (the customers
    who first bought by then), per acquisition channel too."""
    channels = queries.first_channels(session)
    rows = queries.purchase_days(session, holdout_end)
    histories = (
        (customer, [row.day for row in days])
        for customer, days in groupby(rows, key=lambda row: row.customer_id)
    )
    try:
        return validate(histories, calibration_end, holdout_end, channels)
    finally:
        rows.close()  # a server-side cursor on PostgreSQL, maybe not read to its end


@dataclass(frozen=True)
class Models:
    bgnbd: BgNbd
    gamma_gamma: GammaGamma

    @classmethod
    def of(cls, row: Row[Any] | None) -> Models | None:
        if row is None or row.error is not None or row.r is None:
            return None
        return cls(
            BgNbd(row.r, row.alpha, row.a, row.b, row.bgnbd_log_likelihood),
            GammaGamma(row.p, row.q, row.gamma, row.gamma_gamma_log_likelihood),
        )


@dataclass(frozen=True)
class Value:
    historical_value: float
    p_alive: float | None
    expected_purchases: float | None
    expected_spend: float | None
    predicted_clv: float | None


def customer_value(
    counters: Counters,
    models: Models | None,
    as_of: date,
    *,
    horizon_days: int,
    margin: float,
    annual_discount_rate: float,
) -> Value:
    """Predictions from stored parameters and the customer's counters; None where not possible
    (no fitted model yet, or a customer with no purchase)."""
    summary = counters.summary(as_of)
    if models is None or summary is None:
        return Value(round(counters.revenue_total, 2), None, None, None, None)
    horizon = horizon_days / WEEK_DAYS
    bg, gg = models.bgnbd, models.gamma_gamma
    args = (summary.x, summary.t_x, summary.T)
    spend = float(gg.conditional_expected_spend(summary.x, max(summary.mean_repeat_spend, 1e-9)))
    clv = predicted_clv(
        bg, spend, *args, horizon_weeks=horizon, margin=margin,
        annual_discount_rate=annual_discount_rate,
    )  # fmt: skip
    return Value(
        historical_value=round(counters.revenue_total, 2),
        p_alive=float(bg.p_alive(*args)),
        expected_purchases=float(bg.conditional_expected_purchases(horizon, *args)),
        expected_spend=spend,
        predicted_clv=float(clv),
    )


@dataclass(frozen=True)
class ChannelValue:
    channel: str
    customers: int
    buyers: int
    historical_value: float
    expected_purchases: float | None
    predicted_clv: float | None


def value_by_channel(
    customers: dict[str, int],
    buyers: Sequence[Any],
    models: Models | None,
    as_of: date,
    *,
    horizon_days: int,
    margin: float,
    annual_discount_rate: float,
) -> list[ChannelValue]:
    """Customers, buyers, historical value and predicted purchases and CLV summed per first-touch
    channel: `customer_value` for every buyer at once (numpy)."""
    channels = [b.first_channel for b in buyers]
    first = np.array([b.first_purchase_at.date().toordinal() for b in buyers], dtype=np.float64)
    last = np.array([b.last_purchase_at.date().toordinal() for b in buyers], dtype=np.float64)
    x = np.array([b.distinct_days - 1 for b in buyers], dtype=np.float64)
    revenue = np.array([b.revenue_total for b in buyers], dtype=np.float64)
    repeat = revenue - np.array([b.first_day_net for b in buyers], dtype=np.float64)
    expected = clv = np.full(len(buyers), np.nan)
    if models is not None and len(buyers):
        t_x = (last - first) / WEEK_DAYS
        T = np.maximum(as_of.toordinal() - first, 0) / WEEK_DAYS
        m = np.where(x > 0, repeat / np.maximum(x, 1), 0.0)
        spend = models.gamma_gamma.conditional_expected_spend(x, np.maximum(m, 1e-9))
        horizon = horizon_days / WEEK_DAYS
        expected = models.bgnbd.conditional_expected_purchases(horizon, x, t_x, T)
        clv = predicted_clv(
            models.bgnbd, spend, x, t_x, T, horizon_weeks=horizon, margin=margin,
            annual_discount_rate=annual_discount_rate,
        )  # fmt: skip
    result = []
    for channel in sorted(set(customers) | set(channels)):
        mine = np.array([c == channel for c in channels], dtype=bool)
        predicted = models is not None
        result.append(
            ChannelValue(
                channel=channel,
                customers=customers.get(channel, 0),
                buyers=int(mine.sum()),
                historical_value=round(float(revenue[mine].sum()), 2),
                expected_purchases=round(float(expected[mine].sum()), 4) if predicted else None,
                predicted_clv=round(float(clv[mine].sum()), 2) if predicted else None,
            )
        )
    return result
