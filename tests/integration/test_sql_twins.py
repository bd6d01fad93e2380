"""Each rule written both in SQL and in Python, held together on random data in a migrated SQLite
and PostgreSQL database: the attribution weights conversion.py applies to stored touch paths
against attribution.py, and the status thresholds of the stages API against stages.status."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.lifecycle import conversion
from services.lifecycle.api import status_in_sql
from services.lifecycle.attribution import MODELS, credit
from services.lifecycle.journey import Touch, encode_path
from services.lifecycle.stages import StatusRules, status
from services.lifecycle.tables import (
    credit_column,
    lifecycle_customers,
    lifecycle_funnel,
    lifecycle_transitions,
)
from shared.events import CHANNELS
from tests.support.lifecycle import sessions

BASE = datetime(2026, 3, 1, tzinfo=UTC)
RECORDED_LOOKBACK_DAYS = 30
CASES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def db(db_url: str) -> Iterator[sessionmaker[Session]]:
    with sessions(db_url) as factory:
        yield factory


@st.composite
def conversions(draw: st.DrawFn) -> tuple[float, list[tuple[datetime, float, list[Touch]]]]:
    """A lookback shorter than the recorded one (so SQL weighs the paths), and conversions:
    (when, order value, touch path oldest first), with ties and touches on the window's edge."""
    lookback_s = draw(st.integers(1, RECORDED_LOOKBACK_DAYS * 24 - 1)) * 3600
    ages = st.one_of(
        st.integers(0, RECORDED_LOOKBACK_DAYS * 86_400),
        st.sampled_from([0, 60, 3600, lookback_s - 1, lookback_s, lookback_s + 1]),
    )
    touches = st.tuples(ages, st.sampled_from(CHANNELS))
    found = []
    for _ in range(draw(st.integers(1, 4))):
        at = BASE + timedelta(seconds=draw(st.integers(0, 20 * 86_400)))
        path = sorted(
            Touch(at - timedelta(seconds=age), channel)
            for age, channel in draw(st.lists(touches, min_size=1, max_size=8))
        )
        value = draw(st.integers(0, 100_000)) / 100
        found.append((at, value, path))
    return lookback_s / 86_400, found


def _funnel_row(customer: str, stage: str, at: datetime, value: float) -> dict[str, Any]:
    credits = {credit_column(m, c): 0.0 for m in MODELS for c in CHANNELS}
    return {
        "customer_id": customer,
        "stage": stage,
        "entered_at": at,
        "channel": "web",
        "value": value,
        **credits,
    }


@given(case=conversions())
@CASES
def test_sql_attribution_over_stored_paths_is_attribution_credit(
    db: sessionmaker[Session], case: tuple[float, list[tuple[datetime, float, list[Touch]]]]
) -> None:
    lookback_days, found = case
    with db() as session:  # never committed: each example starts from the empty tables
        for n, (at, value, path) in enumerate(found):
            customer = f"c{n}"
            session.execute(
                lifecycle_funnel.insert(),
                [
                    _funnel_row(customer, "engaged", at - timedelta(days=1), 0.0),
                    _funnel_row(customer, "first_purchase", at, value),
                ],
            )
            session.execute(
                lifecycle_transitions.insert().values(
                    id=f"t{n}",
                    customer_id=customer,
                    kind="stage",
                    from_stage="engaged",
                    to_stage="first_purchase",
                    at=at,
                    message_id=f"m{n}",
                    channel=path[-1].channel,
                    touch_path=encode_path(tuple(path)),
                    recorded_at=at,
                )
            )
        for model in MODELS:
            expected: dict[str, float] = defaultdict(float)
            revenue: dict[str, float] = defaultdict(float)
            for at, value, path in found:
                window = [t for t in path if at - t.at <= timedelta(days=lookback_days)]
                for channel, share in credit(model, window, at).items():
                    expected[channel] += share
                    revenue[channel] += share * value
            result = conversion.conversion(
                session,
                from_stage="engaged",
                to_stage="first_purchase",
                model=model,
                since=BASE - timedelta(days=100),
                until=BASE + timedelta(days=100),
                lookback_days=lookback_days,
                recorded_lookback_days=RECORDED_LOOKBACK_DAYS,
            )
            assert result.total.converted == len(found)
            for row in result.channels:
                got = (row.credited_conversions, row.credited_revenue)
                want = (expected[row.channel], revenue[row.channel])
                # julianday() and epoch seconds: ages within microseconds
                assert got == pytest.approx(want, rel=1e-8, abs=1e-9), (model, row.channel)
        session.rollback()


@st.composite
def statuses(
    draw: st.DrawFn,
) -> tuple[StatusRules, datetime, list[tuple[datetime, datetime | None]]]:
    """Rules, a time to ask at, and customers' (last touch, last order or none), many of them a
    microsecond either side of a threshold."""
    at_risk = draw(st.integers(1, 400))
    rules = StatusRules(at_risk, at_risk + draw(st.integers(0, 400)), draw(st.integers(1, 400)))
    now = draw(st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC)))
    thresholds = (rules.at_risk_after_days, rules.lapsed_after_days)
    edges = st.builds(
        lambda days, us: timedelta(days=days, microseconds=us),
        st.sampled_from((*thresholds, rules.non_buyer_lapsed_after_days)),
        st.integers(-2, 2),
    )
    ago = st.one_of(st.timedeltas(timedelta(days=-30), timedelta(days=1000)), edges)
    customers = draw(st.lists(st.tuples(ago, st.one_of(st.none(), ago)), min_size=1, max_size=8))
    return rules, now, [(now - t, None if o is None else now - o) for t, o in customers]


@given(case=statuses())
@CASES
def test_sql_status_is_stages_status(
    db: sessionmaker[Session],
    case: tuple[StatusRules, datetime, list[tuple[datetime, datetime | None]]],
) -> None:
    rules, now, customers = case
    with db() as session:  # never committed: each example starts from the empty table
        session.execute(
            lifecycle_customers.insert(),
            [
                {
                    "customer_id": f"c{n}",
                    "known": True,
                    "first_touch_at": touched,
                    "first_touch_message": f"m{n}",
                    "first_touch_channel": "web",
                    "last_touch_at": touched,
                    "event_count": 1,
                    "order_count": 0 if ordered is None else 1,
                    "revenue": 0.0,
                    "last_order_at": ordered,
                    "stage": "visitor",
                    "stage_entered_at": touched,
                    "last_transition_at": touched,
                    "updated_at": touched,
                }
                for n, (touched, ordered) in enumerate(customers)
            ],
        )
        c = lifecycle_customers.c
        in_sql = dict(session.execute(select(c.customer_id, status_in_sql(rules, now))).all())
        session.rollback()
    in_python = {
        f"c{n}": status(rules, ordered, touched, now)
        for n, (touched, ordered) in enumerate(customers)
    }
    assert in_sql == in_python
