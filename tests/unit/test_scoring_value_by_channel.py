"""Value per acquisition channel equals the per-customer predictions, summed."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest

from services.scoring.btyd import BgNbd, GammaGamma
from services.scoring.counters import Counters
from services.scoring.model import Models, customer_value, value_by_channel

# CDNOW's published parameters (Fader, Hardie & Lee 2005; Fader & Hardie 2013)
MODELS = Models(BgNbd(0.2426, 4.4136, 0.7929, 2.4259, 0.0), GammaGamma(6.25, 3.74, 15.44, 0.0))
AS_OF = date(2026, 11, 23)


def day(month: int, d: int, year: int = 2026) -> datetime:
    return datetime(year, month, d, tzinfo=UTC)


BUYERS = {  # first-touch channel; first and last purchase, orders, revenue, days, first day net
    "a": ("web", Counters(day(1, 5), day(9, 1), 4, 180.0, 3, 40.0)),
    "b": ("web", Counters(day(6, 1), day(6, 1), 1, 35.0, 1, 35.0)),
    "c": ("social", Counters(day(12, 1, 2025), day(11, 1), 9, 900.0, 8, 60.0)),
}


def rows() -> list[SimpleNamespace]:
    return [
        SimpleNamespace(
            first_channel=channel,
            first_purchase_at=c.first_purchase_at,
            last_purchase_at=c.last_purchase_at,
            distinct_days=c.distinct_days,
            revenue_total=c.revenue_total,
            first_day_net=c.first_day_net,
        )
        for channel, c in BUYERS.values()
    ]


def test_sums_of_the_per_customer_predictions() -> None:
    options = {"horizon_days": 365, "margin": 0.3, "annual_discount_rate": 0.1}
    found = {
        v.channel: v
        for v in value_by_channel(
            {"web": 10, "social": 4, "email": 2}, rows(), MODELS, AS_OF, **options
        )
    }
    for channel in ("web", "social"):
        values = [
            customer_value(c, MODELS, AS_OF, **options)
            for ch, c in BUYERS.values()
            if ch == channel
        ]
        assert found[channel].buyers == len(values)
        assert found[channel].predicted_clv == pytest.approx(
            sum(v.predicted_clv or 0 for v in values), abs=0.01
        )
        assert found[channel].expected_purchases == pytest.approx(
            sum(v.expected_purchases or 0 for v in values), abs=1e-4
        )
        assert found[channel].historical_value == pytest.approx(
            sum(v.historical_value for v in values)
        )
    assert (found["email"].customers, found["email"].buyers) == (2, 0)
    assert found["email"].predicted_clv == 0.0


def test_without_a_model_only_history() -> None:
    (social, web) = value_by_channel(
        {"web": 10, "social": 4},
        rows(),
        None,
        AS_OF,
        horizon_days=365,
        margin=1,
        annual_discount_rate=0,
    )
    assert (web.channel, web.buyers, web.historical_value) == ("web", 2, 215.0)
    assert web.predicted_clv is None and social.expected_purchases is None
