"""The lifecycle stage model: every default rule, pass-through, status, win-backs, custom and
bad model files, and order-independence of the facts the rules read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.lifecycle.journey import Touch, touch_path
from services.lifecycle.stages import (
    Facts,
    Mark,
    Order,
    Refund,
    Reset,
    StageModel,
    StageModelError,
    current_stage,
    entry_marks,
    reactivations,
    status,
)

MODEL = StageModel.from_file()
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def at(n: float, channel: str = "web") -> Mark:
    return Mark(day(n), f"m{n}", channel)


def orders(*spec: tuple[float, float]) -> Facts:
    facts = Facts().touched(at(0))
    for n, (when, amount) in enumerate(spec):
        facts = facts.ordered(Order(f"o{n}", at(when), amount))
    return facts


def stages_of(facts: Facts) -> dict[str, datetime | None]:
    marks = entry_marks(MODEL, facts)
    return {name: m.at if m else None for name, m in zip(MODEL.names, marks, strict=True)}


def status_of(facts: Facts, as_of: datetime) -> str:
    bought = [o.mark.at for o in facts.orders if o.mark.at <= as_of]
    return status(MODEL.status, max(bought, default=None), facts.last_touch_at, as_of)


def test_any_touch_makes_a_visitor() -> None:
    assert current_stage(MODEL, Facts().touched(at(3))) == ("visitor", day(3))
    assert current_stage(MODEL, Facts()) is None


def test_engagement_by_event_or_identify_trait() -> None:
    assert MODEL.engaging("Signed Up", {})
    assert MODEL.engaging(None, {"email": "a@example.com"})
    assert not MODEL.engaging(None, {"email": ""})
    assert not MODEL.engaging("Product Viewed", {"plan": "pro"})
    facts = Facts().touched(at(0)).touched(at(2), engaging=True)
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


def test_revenue_is_net_of_refunds_made_before_the_threshold() -> None:
    assert stages_of(orders((1, 300.0), (2, 150.0)))["loyal"] is None
    assert stages_of(orders((1, 300.0), (2, 250.0)))["loyal"] == day(2)
    refunded_first = (
        orders((1, 300.0)).refunded(Refund(at(1.5), 100.0)).ordered(Order("late", at(3), 250.0))
    )
    assert stages_of(refunded_first)["loyal"] is None
    refunded_after = orders((1, 600.0)).refunded(Refund(at(2), 600.0))
    assert stages_of(refunded_after)["loyal"] == day(1)  # forward-only: a refund does not undo
    assert refunded_after.revenue == 0


def test_status_thresholds_for_buyers_and_non_buyers() -> None:
    buyer = orders((0, 20.0))
    assert status_of(buyer, day(90)) == "active"
    assert status_of(buyer, day(91)) == "at_risk"
    assert status_of(buyer, day(180)) == "at_risk"
    assert status_of(buyer, day(181)) == "lapsed"
    browser = Facts().touched(at(0)).touched(at(10))
    assert status_of(browser, day(40)) == "active"
    assert status_of(browser, day(41)) == "lapsed"
    assert status(MODEL.status, None, None, day(1)) == "lapsed"  # no touch yet: not active


def test_reactivation_after_a_lapse() -> None:
    facts = orders((0, 20.0), (100, 20.0), (300, 20.0), (310, 5.0))
    assert [m.at for m in reactivations(MODEL, facts)] == [day(300)]
    assert status_of(facts, day(311)) == "active"


def test_the_same_order_twice_is_one_order_the_earliest_message_wins() -> None:
    facts = orders((1, 20.0))
    assert facts.ordered(Order("o0", at(1), 20.0)) == facts
    later = facts.ordered(Order("o0", at(4), 99.0))
    assert later.orders == facts.orders
    earlier = later.ordered(Order("o0", at(0.5), 20.0))
    assert [o.mark.at for o in earlier.orders] == [day(0.5)]


def test_a_reset_keeps_the_customer_until_later_events_qualify_again() -> None:
    facts = orders((1, 20.0), (2, 20.0))
    assert current_stage(MODEL, facts) == ("repeat", day(2))
    reset = replace(facts, reset=Reset("visitor", day(3)), engaged=None)
    assert current_stage(MODEL, reset) == ("visitor", day(3))
    assert current_stage(MODEL, reset.ordered(Order("new", at(4), 5.0))) == (
        "first_purchase",
        day(4),
    )
    forward = replace(Facts().touched(at(0)), reset=Reset("repeat", day(1)))
    assert current_stage(MODEL, forward) == ("repeat", day(1))


def test_merged_facts_are_the_union_whatever_the_direction() -> None:
    anonymous = Facts().touched(at(0, "social")).touched(at(3), engaging=True)
    known = orders((5, 30.0)).refunded(Refund(at(6), 10.0))
    one, two = anonymous.merged(known), known.merged(anonymous)
    assert one == two
    assert one.first_touch == at(0, "social") and one.engaged == at(3)
    assert one.revenue == 20.0 and one.last_touch_at == day(6)


def test_touch_path_keeps_the_lookback_window_and_its_ends_when_too_long() -> None:
    touches = [Touch(day(n), "web" if n % 2 else "email") for n in range(0, 40)]
    window = touch_path(touches, day(35), timedelta(days=30), limit=50)
    assert [t.at for t in window] == [day(n) for n in range(5, 36)]
    short = touch_path(touches, day(35), timedelta(days=30), limit=4)
    assert [t.at for t in short] == [day(5), day(33), day(34), day(35)]


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
    facts = Facts().touched(at(0)).ordered(Order("o", at(2), 1200.0))
    assert current_stage(model, facts) == ("champion", day(2))
    assert status(model.status, day(2), day(2), day(40)) == "at_risk"


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
        mark = Mark(day(when), f"m{when}-{order}-{engaging}", "web")
        if kind == "touch":
            facts = facts.touched(mark, engaging)
        else:
            facts = facts.ordered(Order(f"o{order}", mark, round(amount, 2)))
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
    assert a == b
    assert entry_marks(MODEL, a) == entry_marks(MODEL, b)
    assert current_stage(MODEL, a) == current_stage(MODEL, b)
    assert reactivations(MODEL, a) == reactivations(MODEL, b)
    entered = [m.at for m in entry_marks(MODEL, a) if m is not None]
    assert entered == sorted(entered)  # a true funnel: each stage no later than the next
