"""Property: whatever ingest's normaliser accepts, both consumers apply. Generated calls (hostile
ones too: deep nesting, huge, negative and non-finite numbers, extreme and malformed times, odd
strings) go through the normaliser, then as published through lifecycle's engine and scoring's
handler on a real migrated SQLite database: every accepted event is applied and counted by both,
none fails (which THE loop would dead-letter)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.ingest.channels import ChannelClassifier
from services.ingest.normalise import Normaliser, Rejected, accept
from services.lifecycle.handlers import build_engine
from services.lifecycle.tables import lifecycle_customers
from services.scoring import handlers as scoring_handlers
from services.scoring.tables import scoring_customers
from shared.events import Touchpoint
from tests.support.lifecycle import migrated_sessions
from tests.support.pipeline import settings_for

LIFECYCLE = build_engine(settings_for("unused:9092", "sqlite://"))
NORMALISER = Normaliser(ChannelClassifier.from_file())
RECEIVED = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(tmp_path_factory.mktemp("ingest-props")) as factory:
        yield factory


def nested(depth: int, leaf: Any) -> Any:
    for n in range(depth):
        leaf = [leaf] if n % 3 == 0 else {"k": leaf}
    return leaf


odd_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)  # NUL, RTL, emoji
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
    st.sampled_from([1.7e308, -1.7e308, 1e12, -1e12, 1e12 + 1, 5e-324, 0, -0.0]),
    st.sampled_from(["12.50", "-3", "1e400", "NaN", "-inf", "ten", ""]),
)
json_leaf = st.one_of(st.none(), st.booleans(), numbers, odd_text)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8,
)
deep = st.builds(nested, st.sampled_from([1, 2, 5, 30, 31, 32, 33, 200, 253, 300]), json_value)
offset = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.one_of(
    st.datetimes(datetime(1890, 1, 1), datetime(2210, 1, 1), timezones=offset),
    st.datetimes(timezones=offset),  # years 1 to 9999
    st.datetimes(datetime(1899, 12, 31), datetime(1900, 1, 2)),  # naive: taken as UTC
    st.datetimes(datetime(2200, 12, 30), datetime(2201, 1, 2)),
)
times = st.one_of(
    moments.map(datetime.isoformat),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00",
            "0005-06-01T00:00:00Z",
            "1899-12-31T23:59:59Z",
            "2201-01-01T00:00:00Z",
            "9999-12-31T23:59:59-01:00",
            "yesterday",
        ]
    ),
    numbers,
)
purchase_properties = st.fixed_dictionaries(
    {"revenue": numbers},
    optional={
        "total": numbers,
        "order_id": st.one_of(odd_text, st.text(min_size=250, max_size=260), numbers, json_value),
        "currency": json_value,
    },
)
event_names = st.one_of(
    st.sampled_from(["Order Completed"] * 3 + ["Order Refunded", "Signed Up", "Page Viewed"]),
    odd_text,
)


def calls(run: str) -> st.SearchStrategy[dict[str, Any]]:
    """Raw Segment calls whose customer ids start with `run`: a plausible call, then up to three
    of its fields replaced by anything at all."""
    ids = st.one_of(
        st.sampled_from(["a", "b", "c"]),
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40),
        st.integers(240, 246).flatmap(lambda n: st.text(min_size=n, max_size=n)),  # about 255
    ).map(run.__add__)
    plausible = st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["track"] * 4 + ["identify", "page", "screen", "group", "alias"]
            ),
            "userId": ids,
            "event": event_names,
        },
        optional={
            "anonymousId": ids,
            "previousId": ids,
            "groupId": ids,
            "messageId": st.one_of(odd_text, st.sampled_from(["m1", "m2"]).map(run.__add__)),
            "name": odd_text,
            "timestamp": times,
            "originalTimestamp": times,
            "sentAt": times,
            "properties": st.one_of(purchase_properties, deep.map(lambda d: {"deep": d})),
            "traits": st.fixed_dictionaries({}, optional={"email": json_value, "deep": deep}),
            "context": st.fixed_dictionaries({}, optional={"app": json_value, "deep": deep}),
        },
    )
    anything = st.one_of(json_value, deep, ids, times, numbers)
    fields = st.sampled_from(
        [
            "type",
            "userId",
            "anonymousId",
            "previousId",
            "messageId",
            "event",
            "properties",
            "traits",
            "context",
            "timestamp",
            "sentAt",
            "originalTimestamp",
        ]
    )
    hostile = st.dictionaries(fields, anything, max_size=3)
    return st.builds(
        lambda call, changes: {**call, **changes}, plausible, st.one_of(st.just({}), hostile)
    )


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bool, Any]:
    run = f"p{uuid.uuid4().hex[:10]}-"
    batch_context = draw(st.one_of(st.none(), deep, json_value))
    return draw(st.lists(calls(run), min_size=1, max_size=6)), draw(st.booleans()), batch_context


def counted(session: Session) -> tuple[int, int]:
    """Events counted in lifecycle and in scoring, over every customer (merges move counts)."""
    return tuple(  # type: ignore[return-value]
        int(session.scalar(select(func.coalesce(func.sum(t.c.event_count), 0))) or 0)
        for t in (lifecycle_customers, scoring_customers)
    )


def issue_25(run: str) -> list[dict[str, Any]]:
    """The calls issue 25 found accepted and then lost or miscounted downstream."""

    def track(user: str, event: str = "E", **fields: Any) -> dict[str, Any]:
        return {"type": "track", "userId": f"{run}{user}", "event": event, **fields}

    def bought(order_id: str, revenue: float) -> dict[str, Any]:
        properties = {"order_id": order_id, "revenue": revenue}
        return track("c", "Order Completed", properties=properties)

    return [
        track("a", properties=nested(200, 1)),
        track("a", properties=nested(252, 1)),
        track("a", properties=nested(253, 1)),
        track("b", timestamp="0001-01-01T00:00:00Z"),
        track("b", timestamp="0001-01-01T00:00:00+01:00"),
        track("b", timestamp="9999-12-31T23:59:59Z"),
        bought("1", 1.7e308),
        bought("2", 1.7e308),
        bought("3", -25),
    ]


@example(batch=(issue_25("issue-25-import-"), True, None))
@example(batch=(issue_25("issue-25-"), False, None))
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=batches())
def test_whatever_the_normaliser_accepts_both_consumers_apply(
    db: sessionmaker[Session], batch: tuple[list[dict[str, Any]], bool, Any]
) -> None:
    raws, historical, batch_context = batch
    published: list[bytes] = []
    for raw in raws:
        try:
            fields = NORMALISER.fields(
                raw,
                kind=None,
                source="props",
                received_at=RECEIVED,
                batch_sent_at=None,
                batch_context=batch_context if isinstance(batch_context, dict) else None,
                historical=historical,
            )
            published.append(accept(fields).value)
        except Rejected as exc:
            assert exc.reason
    # What each consumer reads: the published JSON, decoded as THE loop decodes it.
    touchpoints = [Touchpoint.model_validate_json(value) for value in published]
    with db() as session:
        before = counted(session)
    for apply in (LIFECYCLE.apply, scoring_handlers.apply):
        with db.begin() as session:
            apply(session, touchpoints)
    with db() as session:
        after = counted(session)
        revenues = [*session.scalars(select(lifecycle_customers.c.revenue))]
        revenues += session.scalars(select(scoring_customers.c.revenue_total))
    assert (after[0] - before[0], after[1] - before[1]) == (len(touchpoints), len(touchpoints))
    assert all(math.isfinite(revenue) for revenue in revenues)
