"""Purchase counters: any order or duplication of a customer's purchase events, same counters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scoring.counters import Counters, PurchaseBook

START = datetime(2026, 1, 1, 9, tzinfo=UTC)


@dataclass(frozen=True)
class Purchase:
    kind: str  # "order" or "refund"
    order_id: str
    at: datetime
    amount: float
    message: int = 0  # refunds are distinct messages; the processed table dedupes redeliveries


def fold(events: list[Purchase]) -> PurchaseBook:
    book = PurchaseBook({}, {}, {})
    for e in events:
        if e.kind == "order":
            book.complete("c", e.order_id, e.at, e.amount)
        else:
            book.refund("c", e.order_id, e.amount)
    return book


orders = st.lists(
    st.builds(
        lambda n, hours, cents: Purchase(
            "order", f"o{n}", START + timedelta(hours=hours), cents / 100
        ),
        n=st.integers(0, 8),  # few order ids, so the same order is sent again with other values
        hours=st.integers(0, 24 * 20),
        cents=st.integers(100, 50_000),
    ),
    min_size=1,
    max_size=12,
)


@st.composite
def histories(draw: st.DrawFn) -> list[Purchase]:
    placed = draw(orders)
    # An order's first occurrence is the real one; a resend carries the same values.
    first = {p.order_id: p for p in reversed(placed)}
    events = [first[p.order_id] for p in placed]
    refunds = draw(st.lists(st.sampled_from(sorted(first)), max_size=4))
    events += [Purchase("refund", o, START, 1.0, n) for n, o in enumerate(refunds)]
    return events  # an order sent more than once appears more than once


def comparable(book: PurchaseBook) -> tuple[Counters, dict[date, tuple[float, int]]]:
    counters = book.counters["c"]
    rounded = Counters(**{**vars(counters)})
    rounded.revenue_total = round(counters.revenue_total, 6)
    rounded.first_day_net = round(counters.first_day_net, 6)
    days = {day: (round(d.net, 6), d.orders) for (_, day), d in book.days.items()}
    return rounded, days


@given(histories(), st.randoms())
def test_any_order_and_resent_orders_give_the_same_counters(
    events: list[Purchase], rnd: object
) -> None:
    orders_again = [e for e in events if e.kind == "order"]
    shuffled = events + orders_again  # every order sent once more, in another message
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert comparable(fold(shuffled)) == comparable(fold(events))


@given(histories())
def test_counters_match_a_direct_computation(events: list[Purchase]) -> None:
    counters = fold(events).counters["c"]
    placed = {e.order_id: e for e in reversed([e for e in events if e.kind == "order"])}
    refunds = [e for e in events if e.kind == "refund"]
    days: dict[date, float] = {}
    for order in placed.values():
        refunded = sum(r.amount for r in refunds if r.order_id == order.order_id)
        days[order.at.date()] = days.get(order.at.date(), 0) + order.amount - refunded
    assert counters.order_count == len(placed)
    assert counters.distinct_days == len(days)
    assert counters.first_purchase_at == min(o.at for o in placed.values())
    assert counters.last_purchase_at == max(o.at for o in placed.values())
    assert counters.revenue_total == pytest.approx(sum(days.values()))
    assert counters.first_day_net == pytest.approx(days[min(days)])


def test_btyd_summary_in_weeks_and_mean_repeat_spend() -> None:
    book = PurchaseBook({}, {}, {})
    book.complete("c", "o1", START, 10.0)
    book.complete("c", "o2", START + timedelta(hours=2), 5.0)  # same day: one purchase day
    book.complete("c", "o3", START + timedelta(days=14), 30.0)
    book.complete("c", "o4", START + timedelta(days=21), 50.0)
    book.refund("c", "o4", 10.0)
    summary = book.counters["c"].summary(date(2026, 2, 5))
    assert summary is not None
    assert (summary.x, summary.t_x, summary.T) == (2, 3.0, 5.0)
    assert summary.mean_repeat_spend == pytest.approx((30 + 40) / 2)
    assert Counters().summary(date(2026, 2, 5)) is None


def test_refund_before_its_order_is_netted_when_the_order_arrives() -> None:
    book = PurchaseBook({}, {}, {})
    book.refund("c", "o1", 4.0)
    assert "c" not in book.counters
    book.complete("c", "o1", START, 10.0)
    assert book.counters["c"].revenue_total == 6.0
    assert book.counters["c"].order_count == 1
