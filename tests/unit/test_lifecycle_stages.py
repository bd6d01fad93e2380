"""The lifecycle stage model: every default rule, pass-through, status, win-backs, custom and
bad model files, and order-independence of the facts the rules read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.lifecycle.stages import (
    Facts,
    Order,
    StageModel,
    StageModelError,
    current_stage,
    entry_times,
    reactivations,
    status,
)

MODEL = StageModel.from_file()
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def orders(*spec: tuple[float, float]) -> Facts:
    facts = Facts().touched(day(0))
    for n, (when, amount) in enumerate(spec):
        facts = facts.ordered(Order(f"o{n}", day(when), amount))
    return facts


def stages_of(facts: Facts) -> dict[str, datetime | None]:
    return dict(zip(MODEL.names, entry_times(MODEL, facts), strict=True))


def test_any_touch_makes_a_visitor() -> None:
    assert current_stage(MODEL, Facts().touched(day(3))) == ("visitor", day(3))
    assert current_stage(MODEL, Facts()) is None


def test_engagement_by_event_or_identify_trait() -> None:
    assert MODEL.engaging("Signed Up", {})
    assert MODEL.engaging(None, {"email": "a@example.com"})
    assert not MODEL.engaging(None, {"email": ""})
    assert not MODEL.engaging("Product Viewed", {"plan": "pro"})
    facts = Facts().touched(day(0)).touched(day(2), engaging=True)
    assert current_stage(MODEL, facts) == ("engaged", day(2))


def test_first_purchase_passes_through_engaged_at_the_same_instant() -> None:
    entered = stages_of(orders((5, 20.0)))
    assert entered["visitor"] == day(0)
    assert entered["engaged"] == entered["first_purchase"] == day(5)
    assert entered["repeat"] is None


def test_repeat_needs_a_second_purchase_day() -> None:
    same_day = stages_of(orders((5, 20.0), (5.2, 10.0)))
    assert same_day["repeat"] is None
    entered = stages_of(orders((5, 20.0), (5.2, 10.0), (9, 10.0)))
    assert entered["repeat"] == day(9)


def test_loyal_by_five_orders_or_by_revenue_whichever_first() -> None:
    by_orders = stages_of(orders(*((n, 10.0) for n in range(1, 6))))
    assert by_orders["loyal"] == day(5)
    by_revenue = stages_of(orders((1, 100.0), (2, 450.0)))
    assert by_revenue["loyal"] == by_revenue["repeat"] == day(2)
    big_first_order = stages_of(orders((1, 600.0)))
    # One big order is loyal by revenue: it passes through repeat at the same instant.
    assert big_first_order["loyal"] == big_first_order["repeat"] == day(1)


def test_refund_net_amounts_count_toward_revenue() -> None:
    assert stages_of(orders((1, 300.0), (2, 150.0)))["loyal"] is None
    assert stages_of(orders((1, 300.0), (2, 250.0)))["loyal"] == day(2)


def test_stage_as_of_a_past_time() -> None:
    facts = orders((5, 20.0), (9, 10.0))
    assert current_stage(MODEL, facts, as_of=day(6)) == ("first_purchase", day(5))
    assert current_stage(MODEL, facts, as_of=day(1)) == ("visitor", day(0))


def test_status_thresholds_for_buyers_and_non_buyers() -> None:
    buyer = orders((0, 20.0))
    assert status(MODEL, buyer, day(90)) == "active"
    assert status(MODEL, buyer, day(91)) == "at_risk"
    assert status(MODEL, buyer, day(180)) == "at_risk"
    assert status(MODEL, buyer, day(181)) == "lapsed"
    browser = Facts().touched(day(0)).touched(day(10))
    assert status(MODEL, browser, day(40)) == "active"
    assert status(MODEL, browser, day(41)) == "lapsed"
    assert status(MODEL, browser, day(-1)) == "lapsed"  # before the first touch: not a customer


def test_reactivation_after_a_lapse() -> None:
    facts = orders((0, 20.0), (100, 20.0), (300, 20.0), (310, 5.0))
    assert reactivations(MODEL, facts) == [day(300)]
    assert status(MODEL, facts, day(311)) == "active"


def test_the_same_order_twice_is_one_order() -> None:
    facts = orders((1, 20.0))
    again = facts.ordered(Order("o0", day(1), 20.0))
    assert again == facts


def test_custom_model_renames_and_adds_stages(tmp_path: Path) -> None:
    path = tmp_path / "stages.toml"
    path.write_text(
        '[[stage]]\nname = "prospect"\nany_touch = true\n'
        '[[stage]]\nname = "trial"\nevents = ["Trial Started"]\n'
        '[[stage]]\nname = "customer"\nmin_orders = 1\n'
        '[[stage]]\nname = "champion"\nmin_revenue = 1000\n'
        "[status]\nat_risk_after_days = 30\nlapsed_after_days = 60\n"
    )
    model = StageModel.from_file(path)
    assert model.names == ["prospect", "trial", "customer", "champion"]
    assert model.engaging("Trial Started", {}) and not model.engaging("Signed Up", {})
    facts = Facts().touched(day(0)).ordered(Order("o", day(2), 1200.0))
    assert current_stage(model, facts) == ("champion", day(2))
    assert status(model, facts, day(40)) == "at_risk"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[stage]\n", "cannot read stage model"),
        ("", "expected one or more"),
        ('[[stage]]\nname = "a"\nevents = ["X"]\n', "needs any_touch = true"),
        ("[[stage]]\nany_touch = true\n", "needs a `name`"),
        (
            '[[stage]]\nname = "a"\nany_touch = true\n[[stage]]\nname = "a"\nmin_orders = 1\n',
            "unique",
        ),
        (
            '[[stage]]\nname = "a"\nany_touch = true\n[[stage]]\nname = "b"\n',
            "needs at least one condition",
        ),
        (
            '[[stage]]\nname = "a"\nany_touch = true\n[[stage]]\nname = "b"\nmin_orders = 0\n',
            "whole number >= 1",
        ),
        (
            '[[stage]]\nname = "a"\nany_touch = true\n'
            '[[stage]]\nname = "b"\nmin_revenue = "lots"\n',
            "number > 0",
        ),
        ('[[stage]]\nname = "a"\nany_touch = true\ncolour = "red"\n', "unknown keys"),
        (
            '[[stage]]\nname = "a"\nany_touch = true\n[status]\nat_risk_after_days = 200\n',
            "must exceed",
        ),
    ],
)
def test_bad_model_files_fail_with_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "stages.toml"
    path.write_text(text)
    with pytest.raises(StageModelError, match=message):
        StageModel.from_file(path)


calls = st.lists(
    st.one_of(
        st.tuples(st.just("touch"), st.integers(0, 400), st.booleans(), st.just(0), st.just(0.0)),
        st.tuples(
            st.just("order"),
            st.integers(0, 400),
            st.just(False),
            st.integers(0, 6),
            st.floats(1, 300),
        ),
    ),
    min_size=1,
    max_size=25,
)


def fold(events: list[tuple[str, int, bool, int, float]]) -> Facts:
    facts = Facts()
    for kind, when, engaging, order, amount in events:
        if kind == "touch":
            facts = facts.touched(day(when), engaging)
        else:
            facts = facts.ordered(Order(f"o{order}", day(when), round(amount, 2)))
    return facts


@given(calls, st.randoms())
def test_any_order_or_duplication_gives_the_same_stage_and_status(
    events: list[tuple[str, int, bool, int, float]], rnd: object
) -> None:
    # The same order id always carries the same time and amount (it is one order).
    first = {e[3]: e for e in events if e[0] == "order"}
    events = [first[e[3]] if e[0] == "order" else e for e in events]
    shuffled = events + events[: len(events) // 2]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = fold(events), fold(shuffled)
    assert entry_times(MODEL, a) == entry_times(MODEL, b)
    assert current_stage(MODEL, a) == current_stage(MODEL, b)
    assert status(MODEL, a, day(420)) == status(MODEL, b, day(420))
    assert reactivations(MODEL, a) == reactivations(MODEL, b)
    assert a.first_touch_at == b.first_touch_at
    entered = [t for t in entry_times(MODEL, a) if t is not None]
    assert entered == sorted(entered)  # a true funnel: each stage no later than the next
