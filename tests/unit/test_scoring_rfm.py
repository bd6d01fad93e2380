"""Live RFM quintiles: after any stream of customer changes, the scores kept from histogram
deltas equal a from-scratch computation over the population (R and F exactly, M to 1%)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scoring.counters import Counters
from services.scoring.rfm import RfmValues, money_bucket, population_deltas, rfm_scores, score
from services.scoring.segments import SegmentMap, SegmentMapError

START = datetime(2026, 1, 1, tzinfo=UTC)
AS_OF = date(2026, 12, 31)


def counters(day: int, orders: int, revenue: float) -> Counters:
    at = START + timedelta(days=day)
    return Counters(at, at, orders, revenue, orders, revenue)


customer_states = st.builds(
    counters,
    day=st.integers(0, 30),  # few distinct values: heavy ties on every dimension
    orders=st.sampled_from([1, 1, 1, 1, 2, 2, 3, 5, 8]),  # half single buyers, as in CDNOW
    revenue=st.floats(1, 2000, allow_nan=False).map(lambda v: round(v, 2)),
)


def exact_score(value: float, population: list[float]) -> int:
    below = sum(1 for v in population if v < value)
    return min(5, 1 + 5 * below // len(population))


@given(st.lists(st.tuples(st.integers(0, 40), customer_states), min_size=1, max_size=150))
def test_live_scores_equal_a_from_scratch_computation(updates: list[tuple[int, Counters]]) -> None:
    histogram: Counter[tuple[str, int]] = Counter()
    current: dict[int, Counters] = {}
    for customer, state in updates:  # each update replaces the customer's previous state
        before = RfmValues.of(current[customer]) if customer in current else None
        for key, delta in population_deltas([(before, RfmValues.of(state))]).items():
            histogram[key] += delta
        current[customer] = state

    totals = {d: sum(n for (dim, _), n in histogram.items() if dim == d) for d in "rfm"}
    assert totals == {d: len(current) for d in "rfm"}
    for state in current.values():
        values = RfmValues.of(state)
        assert values is not None
        below = {
            d: sum(n for (dim, v), n in histogram.items() if dim == d and v < getattr(values, d))
            for d in "rfm"
        }
        scores = rfm_scores(state, below, totals, AS_OF)
        assert scores is not None
        population = list(current.values())
        assert scores.r == exact_score(
            state.last_purchase_at.timestamp(), [c.last_purchase_at.timestamp() for c in population]
        )  # type: ignore[union-attr]
        assert scores.f == exact_score(state.order_count, [c.order_count for c in population])
        # M at 1% resolution: only customers within 1% of this one may be ordered differently.
        near = [
            c.revenue_total
            for c in population
            if abs(c.revenue_total - state.revenue_total) <= 0.011 * state.revenue_total + 0.01
        ]
        lowest = exact_score(min(near), [c.revenue_total for c in population])
        highest = exact_score(max(near), [c.revenue_total for c in population])
        assert lowest <= scores.m <= highest
        assert scores.recency_days == (AS_OF - state.last_purchase_at.date()).days  # type: ignore[union-attr]


def test_ties_share_a_score_and_single_buyers_get_f1() -> None:
    population = [1] * 50 + [2] * 20 + [3] * 15 + [5] * 10 + [9] * 5
    assert {exact_score(1, population)} == {score(0, 100)} == {1}
    assert score(50, 100) == 3 and score(85, 100) == 5 and score(95, 100) == 5
    assert score(0, 0) == 1


def test_money_buckets_are_monotone_and_one_percent_wide() -> None:
    amounts = [0, 0.5, 1, 9.99, 10, 10.2, 99, 100, 1000, 1010.5, 1e6]
    buckets = [money_bucket(a) for a in amounts]
    assert buckets == sorted(buckets)
    assert money_bucket(-5) == money_bucket(0) == 0
    assert money_bucket(1000) != money_bucket(1021)


def test_default_segment_map_covers_every_cell() -> None:
    segments = SegmentMap.from_file()
    assert segments.segment(5, 5) == "champions"
    assert segments.segment(5, 1) == "new_customers"
    assert segments.segment(4, 1) == "promising"
    assert segments.segment(3, 3) == "need_attention"
    assert segments.segment(2, 5) == "cant_lose_them"
    assert segments.segment(1, 4) == "at_risk"
    assert segments.segment(1, 1) == "hibernating"
    assert len(segments.names) == 10


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[segment]\n", "cannot read segment map"),
        ('[[segment]]\nname = "all"\nr = [1, 5]\nf = [1, 4]\n', "no segment for R=1 F=5"),
        (
            '[[segment]]\nname = "a"\nr = [1, 5]\nf = [1, 5]\n'
            '[[segment]]\nname = "b"\nr = [5, 5]\nf = [5, 5]\n',
            "R=5 F=5 is in both 'a' and 'b'",
        ),
        ('[[segment]]\nname = "a"\nr = [0, 5]\nf = [1, 5]\n', "must be \\[low, high\\]"),
        ("[[segment]]\nr = [1, 5]\nf = [1, 5]\n", "needs a `name`"),
    ],
)
def test_bad_segment_map_fails_clearly(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "segments.toml"
    path.write_text(text)
    with pytest.raises(SegmentMapError, match=message):
        SegmentMap.from_file(path)
