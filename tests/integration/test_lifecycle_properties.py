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
from tests.support.lifecycle import (
    day,
    derived_funnel,
    feed,
    funnel_rows,
    migrated_sessions,
    person_events,
    person_steps,
    state,
)
from tests.support.pipeline import settings_for

ENGINE = build_engine(settings_for("unused:9092", "sqlite://"))


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(tmp_path_factory.mktemp("props")) as factory:
        yield factory


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
@given(person_steps, st.randoms(use_true_random=False))
def test_any_order_duplication_or_batching_gives_the_same_state(
    db: sessionmaker[Session], spec: list[tuple[Any, ...]], rnd: Any
) -> None:
    one, two = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
    for event in person_events(one, spec):  # one event per batch, in the given order
        feed(db, ENGINE, [event])
    shuffled = person_events(two, spec)
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
