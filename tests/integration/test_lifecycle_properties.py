"""Property: for random event sequences of one person (anonymous, identified, aliased; touches,
engagement, orders, refunds), any permutation of the events, any duplication and any split into
batches give the same lifecycle state. Real handler, real migrated SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from services.lifecycle import queries
from services.lifecycle.handlers import build_engine
from services.lifecycle.stages import status
from shared.events import Touchpoint
from tests.support.lifecycle import (
    day,
    derived_funnel,
    feed,
    funnel_rows,
    migrated_sessions,
    state,
    touch,
)
from tests.support.pipeline import settings_for

ENGINE = build_engine(settings_for("unused:9092", "sqlite://"))
CHANNELS = ("web", "email", "mobile", "social", "other")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(tmp_path_factory.mktemp("props")) as factory:
        yield factory


when = st.integers(0, 420)
channel = st.sampled_from(CHANNELS)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("touch"), when, channel, st.sampled_from(["anon", "user", "both"])),
        st.tuples(st.just("engage"), when, channel, st.sampled_from(["anon", "user"])),
        st.tuples(st.just("identify"), when, channel, st.booleans()),
        st.tuples(st.just("alias"), when, channel, st.just(None)),
        st.tuples(st.just("order"), when, st.integers(0, 5), st.floats(1, 400)),
        st.tuples(st.just("refund"), when, st.integers(0, 5), st.floats(1, 100)),
    ),
    min_size=1,
    max_size=20,
)


def build(run: str, spec: list[tuple[Any, ...]]) -> list[Touchpoint]:
    user, anon = f"{run}-user", f"{run}-anon"
    who = {"anon": {"anon": anon}, "user": {"user": user}, "both": {"user": user, "anon": anon}}
    orders: dict[int, tuple[int, float]] = {}
    events = []
    for n, (kind, at, a, b) in enumerate(spec):
        mid = f"{run}-{n:03d}"
        if kind == "touch":
            events.append(touch(day(at), channel=a, message_id=mid, **who[b]))
        elif kind == "engage":
            events.append(touch(day(at), event="Signed Up", channel=a, message_id=mid, **who[b]))
        elif kind == "identify":
            traits = {"email": "x@example.com"} if b else {}
            events.append(
                touch(day(at), kind="identify", user=user, anon=anon, channel=a, traits=traits,
                      message_id=mid)
            )  # fmt: skip
        elif kind == "alias":
            events.append(
                touch(day(at), kind="alias", user=user, previous=anon, channel=a, message_id=mid)
            )
        else:
            at, amount = orders.setdefault(a, (at, round(b, 2))) if kind == "order" else (at, b)
            event = "Order Completed" if kind == "order" else "Order Refunded"
            props = {"order_id": f"o{a}", "revenue": round(amount, 2)}
            events.append(
                touch(day(at), user=user, event=event, properties=props,
                      revenue=round(amount, 2), message_id=mid)
            )  # fmt: skip
    return events


def outcome(db: sessionmaker[Session], run: str) -> list[dict[str, Any] | None]:
    """Both people's state with the run's prefix removed, plus status as of a fixed time."""
    result = []
    with db() as session:
        for any_id in (f"{run}-user", f"{run}-anon"):
            values = state(session, any_id)
            if values is not None:
                values["status"] = status(
                    ENGINE.model.status, values["last_order_at"], values["last_touch_at"], day(400)
                )
            result.append(values)
    return _without(result, run)


def _without(value: Any, run: str) -> Any:
    if isinstance(value, str):
        return value.replace(run, "RUN")
    if isinstance(value, dict):
        return {k: _without(v, run) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_without(v, run) for v in value)
    return value


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps, st.randoms(use_true_random=False))
def test_any_order_duplication_or_batching_gives_the_same_state(
    db: sessionmaker[Session], spec: list[tuple[Any, ...]], rnd: Any
) -> None:
    one, two = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
    for event in build(one, spec):  # one event per batch, in the given order
        feed(db, ENGINE, [event])
    shuffled = build(two, spec)
    shuffled += rnd.sample(shuffled, len(shuffled) // 2)  # some delivered twice
    rnd.shuffle(shuffled)
    while shuffled:
        size = rnd.randint(1, 8)
        feed(db, ENGINE, shuffled[:size])
        shuffled = shuffled[size:]
    assert outcome(db, one) == outcome(db, two)
    with db() as session:  # conversion's view, kept up to date batch by batch, is the journey's
        ids = [f"{run}-{kind}" for run in (one, two) for kind in ("user", "anon")]
        for customer in {queries.customer_of(session, i) for i in ids} - {None}:
            assert customer is not None
            assert funnel_rows(session, customer) == derived_funnel(session, customer)
