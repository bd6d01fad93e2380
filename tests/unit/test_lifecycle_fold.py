"""The lifecycle fold without a database: stages, identity merges, win-backs, refunds, resets,
and the property that any permutation, duplication and batching of a person's events folds to
the same state (the pure twin of tests/integration/test_lifecycle_properties.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.lifecycle import fold
from services.lifecycle.fold import State
from services.lifecycle.handlers import build_engine
from services.lifecycle.journey import REACTIVATED, RESET, STAGE
from shared.events import StageChange, Touchpoint
from tests.support.lifecycle import day, identify, order, person_events, person_steps, refund, touch
from tests.support.pipeline import settings_for

RULES = build_engine(settings_for("unused:9092", "sqlite://")).rules


def run(batches: Iterable[Sequence[Touchpoint]], state: State | None = None) -> State:
    """Fold batches as the consumer does: a message seen before is dropped, then each batch's
    journeys are chosen, and their touch windows found, as `queries.load` does."""
    state = state or fold.empty()
    seen: set[str] = set()
    for batch in batches:
        fresh = []
        for event in batch:
            if event.message_id not in seen:
                seen.add(event.message_id)
                fresh.append(event)
        state.journeys = fold.plan(RULES, state, fresh)
        fold.touch_windows(RULES, state, fresh)  # leaves the state as it was, but its cache
        state, _ = fold.fold(RULES, state, fresh)
    return state


def view(state: State, any_id: str) -> dict[str, Any] | None:
    """One person's profile, ids and journey, as the integration tests read them back."""
    customer = state.ids.customer_of.get(any_id)
    if customer is None:
        return None
    p = state.profiles[customer]
    f = p.facts
    return {
        "customer": customer,
        "known": p.known,
        "first_touch": f.first_touch,
        "last_touch_at": f.last_touch_at,
        "engaged": f.engaged,
        "orders": f.orders,
        "refunds": f.refunds,
        "events": p.event_count,
        "order_count": p.order_count,
        "revenue": round(p.revenue, 6),
        "last_order_at": p.last_order_at,
        "stage": (p.stage, p.stage_entered_at),
        "last_transition_at": p.last_transition_at,
        "ids": sorted(i for i, c in state.ids.customer_of.items() if c == customer),
        "journey": journey(state, customer),
    }


def journey(state: State, customer: str) -> list[tuple[Any, ...]]:
    """The stored transitions in time order, then funnel order."""
    rank = {name: i for i, name in enumerate(RULES.model.names)}
    return [
        (s.mark.at, s.kind, s.from_stage, s.to_stage, s.mark.message_id, s.mark.channel, s.path)
        for s in sorted(
            state.transitions.get(customer, []),
            key=lambda s: (s.mark.at, s.kind, rank.get(s.to_stage, -1), s.path),
        )
    ]


def entries(state: State, customer: str) -> list[tuple[str, str | None, str]]:
    return [(kind, a, b) for _, kind, a, b, *_ in journey(state, customer)]


def test_stages_advance_one_step_at_a_time_with_pass_through() -> None:
    state = run([[touch(day(0), user="u")], [touch(day(1), user="u", event="Signed Up")]])
    assert entries(state, "u") == [(STAGE, None, "visitor"), (STAGE, "visitor", "engaged")]
    state = run([[order(day(2), "o1", 30.0, user="u")]], state)
    state = run([[order(day(5), "o2", 20.0, user="u")]], state)
    p = state.profiles["u"]
    assert (p.stage, p.stage_entered_at, p.order_count, p.revenue) == ("repeat", day(5), 2, 50.0)
    assert entries(state, "u")[-2:] == [
        (STAGE, "engaged", "first_purchase"),
        (STAGE, "first_purchase", "repeat"),
    ]
    # A first order from a customer never seen passes through every earlier stage at once.
    state = run([[order(day(3), "o9", 10.0, user="v")]], state)
    assert entries(state, "v") == [
        (STAGE, None, "visitor"),
        (STAGE, "visitor", "engaged"),
        (STAGE, "engaged", "first_purchase"),
    ]
    assert {row[0] for row in journey(state, "v")} == {day(3)}


def test_identity_merge_sums_counters_keeps_furthest_stage_and_earliest_first_touch() -> None:
    anon = [touch(day(0), anon="a", channel="social"), touch(day(1), anon="a")]
    known = [
        touch(day(2), user="u", channel="email"),
        order(day(3), "o1", 40.0, user="u"),
    ]
    state = run([anon, known])
    assert state.profiles["a"].stage == "visitor"
    assert state.profiles["u"].stage == "first_purchase"

    state = run([[identify(day(4), "u", "a")]], state)
    assert "a" not in state.profiles  # absorbed
    p = state.profiles["u"]
    assert p.known and p.event_count == 5  # 2 anonymous + 2 known + the identify
    assert p.facts.first_touch is not None and p.facts.first_touch.at == day(0)
    assert p.facts.first_touch.channel == "social"
    assert p.stage == "first_purchase" and p.order_count == 1 and p.revenue == 40.0
    assert state.ids.customer_of["a"] == "u"
    # One live entry per stage: the anonymous profile's visitor entry moved to the earliest touch.
    assert [e for e in entries(state, "u") if e[2] == "visitor"] == [(STAGE, None, "visitor")]
    assert journey(state, "u")[0][0] == day(0)
    assert "a" not in state.transitions


def test_a_merge_writes_the_moves_links_and_rewrites_the_funnel() -> None:
    state = run([[touch(day(0), anon="a")], [order(day(1), "o1", 25.0, user="u")]])
    batch = [identify(day(2), "u", "a")]
    state.journeys = fold.plan(RULES, state, batch)
    assert {"a", "u"} <= state.journeys
    _, writes = fold.fold(RULES, state, batch)
    assert writes.moves == [("a", "u")]
    assert writes.links == {"a": "u"}
    assert {s for _, s in writes.stale} == set(RULES.model.names)  # merged: every stage redone
    assert sorted(e.stage for e in writes.funnel) == ["engaged", "first_purchase", "visitor"]
    assert [o.order_id for _, o in writes.orders] == ["o1"]
    assert not writes.touched


def test_two_known_customers_are_never_merged() -> None:
    state = run([[touch(day(0), user="u1", anon="a")], [touch(day(1), user="u2")]])
    state = run([[touch(day(2), user="u2", anon="a")]], state)
    assert state.ids.customer_of["a"] == "u1"
    assert set(state.profiles) == {"u1", "u2"}


def test_a_late_order_fills_a_win_back() -> None:
    state = run([[order(day(0), "o1", 30.0, user="u")], [order(day(200), "o2", 25.0, user="u")]])
    assert (REACTIVATED, "lapsed", "active") in entries(state, "u")
    # An order between them, delivered late: no lapse any more, so no win-back.
    state, writes = fold.fold(
        RULES, _planned(state, [late := order(day(100), "o3", 10.0, user="u")]), [late]
    )
    assert (REACTIVATED, "lapsed", "active") not in entries(state, "u")
    assert writes.deletes  # the stored win-back row goes
    assert state.profiles["u"].revenue == 65.0


def test_a_late_refund_dated_before_the_threshold_removes_a_stage() -> None:
    state = run([[order(day(0), "o1", 300.0, user="u")], [order(day(1), "o2", 250.0, user="u")]])
    assert state.profiles["u"].stage == "loyal"  # net 550 reached 500
    state = run([[refund(day(0.5), "o1", 300.0, user="u")]], state)
    p = state.profiles["u"]
    assert (p.revenue, p.order_count, p.stage) == (250.0, 2, "repeat")
    assert (STAGE, "repeat", "loyal") not in entries(state, "u")


def test_refunds_subtract_whatever_their_sign_and_count_once() -> None:
    sale = order(day(0), "o1", 100.0, user="u")
    back = refund(day(1), "o1", -30.0, user="u")
    state = run([[sale], [back]])
    assert state.profiles["u"].revenue == 70.0
    state2, writes = fold.fold(RULES, _planned(state, [back]), [back])
    assert state2.profiles["u"].revenue == 70.0  # the same refund message again: one refund
    assert len(writes.refunds) == 1  # written again, stored once (insert or ignore)


def test_touches_only_move_counters_and_are_written_as_such() -> None:
    state = run([[touch(day(0), user="u")]])
    batch = [touch(day(3), user="u"), touch(day(4), user="u")]
    state.journeys = fold.plan(RULES, state, batch)
    assert state.journeys == set()
    state, writes = fold.fold(RULES, state, batch)
    assert [p.customer_id for p in writes.touched] == ["u"]
    assert not writes.profiles and not writes.inserts and not writes.funnel
    assert state.profiles["u"].event_count == 3
    assert state.profiles["u"].facts.last_touch_at == day(4)


def test_a_late_touch_lengthens_the_stored_path() -> None:
    state = run([[touch(day(5), user="u")], [order(day(6), "o1", 10.0, user="u")]])
    before = journey(state, "u")[-1][-1]
    late = [touch(day(4), user="u", channel="email")]
    state.journeys = fold.plan(RULES, state, late)
    assert state.journeys == {"u"}
    state, writes = fold.fold(RULES, state, late)
    after = journey(state, "u")[-1][-1]
    assert "email" in after and "email" not in before
    assert writes.updates and not writes.inserts  # rows corrected, not appended


def test_a_touch_stored_twice_is_one_touch_of_the_path() -> None:
    """As the touches table takes it: the same (customer, time, message) is one row."""
    first = touch(day(0), user="u", channel="email")
    state = run([[first]])
    again = [first, order(day(1), "o1", 10.0, user="u")]  # a replay the dedup did not catch
    state, _ = fold.fold(RULES, _planned(state, again), again)
    path = journey(state, "u")[-1][-1]
    assert path.count("email") == 1
    assert len(state.touches["u"]) == 2


def test_reset_inserts_an_audited_transition_and_rules_apply_again_later() -> None:
    state = run([[touch(day(0), user="u", event="Signed Up")]])
    assert state.profiles["u"].stage == "engaged"
    state.journeys = {"u"}
    state, writes = fold.reset(RULES, state, "u", "visitor", day(10), "support ticket")
    assert writes.inserts[0].transition.kind == RESET and writes.inserts[0].note == "support ticket"
    assert state.profiles["u"].stage == "visitor"
    assert (RESET, "engaged", "visitor") in entries(state, "u")
    state = run([[touch(day(11), user="u", event="Signed Up")]], state)
    assert state.profiles["u"].stage == "engaged"
    assert state.profiles["u"].stage_entered_at == day(11)


def test_touch_windows_cover_every_path_the_fold_reads() -> None:
    state = run([[touch(day(0), user="u")], [touch(day(1), user="u")]])
    batch = [order(day(2), "o1", 10.0, user="u")]
    state.journeys = fold.plan(RULES, state, batch)
    since = fold.touch_windows(RULES, state, batch)
    assert since == {"u": day(2) - RULES.lookback}
    resolved = replace(state, ids=fold.copy_ids(state.ids))  # as queries.load passes it
    resolved.owners = fold.resolve(resolved.ids, batch)
    assert fold.touch_windows(RULES, resolved, batch) == since
    assert state.profiles["u"].order_count == 0  # the windows' fold changed nothing


def test_the_stage_change_message_has_one_wire_format() -> None:
    _, writes = fold.fold(RULES, fold.empty(), [order(day(0), "o1", 5.0, user="u")])
    new = writes.inserts[-1]
    t = new.transition
    wire = StageChange.encode(
        transition_id=new.id,
        customer_id=new.customer_id,
        kind=t.kind,
        from_stage=t.from_stage,
        to_stage=t.to_stage,
        at=t.mark.at,
        channel=t.mark.channel,
        message_id=t.mark.message_id,
        recorded_at=day(1),
    )
    message = StageChange.model_validate_json(wire)
    assert (message.to_stage, message.at, message.recorded_at) == ("first_purchase", day(0), day(1))
    assert message.to_json() == wire


def _planned(state: State, batch: Sequence[Touchpoint]) -> State:
    state.journeys = fold.plan(RULES, state, batch)
    return state


# --- the property ---------------------------------------------------------------------------


def outcome(state: State) -> list[dict[str, Any] | None]:
    return [view(state, "p-user"), view(state, "p-anon")]


@settings(max_examples=300, deadline=None)
@given(person_steps, st.randoms(use_true_random=False))
def test_any_order_duplication_or_batching_folds_to_the_same_state(
    spec: list[tuple[Any, ...]], rnd: Any
) -> None:
    events = person_events("p", spec)
    one_by_one = run([e] for e in events)
    shuffled = events + rnd.sample(events, len(events) // 2)  # some delivered twice
    rnd.shuffle(shuffled)
    batches = []
    while shuffled:
        size = rnd.randint(1, 8)
        batches.append(shuffled[:size])
        shuffled = shuffled[size:]
    assert outcome(run(batches)) == outcome(one_by_one)
    assert outcome(run([events])) == outcome(one_by_one)  # all in one batch


@settings(max_examples=100, deadline=None)
@given(person_steps, st.randoms(use_true_random=False))
def test_folding_every_journey_gives_what_folding_the_planned_ones_gives(
    spec: list[tuple[Any, ...]], rnd: Any
) -> None:
    """The plan's shortcut (most touches only move counters) changes nothing: recomputing
    every customer's journey in each batch folds to the same state."""
    events = person_events("p", spec)
    split = rnd.randint(0, len(events))
    first = run([events[:split]])
    everything = run([events[:split]])
    planned = run([events[split:]], first)
    everything.journeys = set(everything.profiles) | fold.plan(RULES, everything, events[split:])
    everything, _ = fold.fold(RULES, everything, events[split:])
    assert outcome(planned) == outcome(everything)
