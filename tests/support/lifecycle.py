"""Building touchpoints for lifecycle tests and reading a customer's lifecycle state back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.lifecycle import queries
from services.lifecycle.attribution import credits
from services.lifecycle.fold import FunnelEntry
from services.lifecycle.handlers import LifecycleEngine
from services.lifecycle.journey import decode_path
from services.lifecycle.repository import funnel_row
from services.lifecycle.tables import lifecycle_customers, lifecycle_funnel, lifecycle_orders
from shared.db import dedup_scope, make_engine, make_session_factory, mark_processed
from shared.events import CHANNELS, Touchpoint
from shared.migrate import upgrade
from shared.privacy import id_hash

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def touch(
    at: datetime,
    *,
    user: str | None = None,
    anon: str | None = None,
    kind: str = "track",
    event: str | None = "Product Viewed",
    channel: str = "web",
    previous: str | None = None,
    traits: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    revenue: float | None = None,
    message_id: str | None = None,
) -> Touchpoint:
    return Touchpoint(
        message_id=message_id or uuid.uuid4().hex,
        type=kind,  # type: ignore[arg-type]
        event=event if kind == "track" else None,
        user_id=user,
        anonymous_id=anon,
        previous_id=previous,
        channel=channel,  # type: ignore[arg-type]
        source="test",
        timestamp=at,
        received_at=at,
        traits=traits or {},
        properties=properties or {},
        revenue=revenue,
    )


def order(
    at: datetime,
    order_id: str,
    amount: float,
    *,
    user: str | None = None,
    anon: str | None = None,
    channel: str = "web",
) -> Touchpoint:
    return touch(
        at,
        user=user,
        anon=anon,
        channel=channel,
        event="Order Completed",
        properties={"order_id": order_id, "revenue": amount},
        revenue=amount,
    )


def refund(at: datetime, order_id: str, amount: float, *, user: str) -> Touchpoint:
    return touch(
        at,
        user=user,
        event="Order Refunded",
        properties={"order_id": order_id, "revenue": amount},
        revenue=amount,
    )


def identify(at: datetime, user: str, anon: str, email: str | None = None) -> Touchpoint:
    traits = {"email": email} if email else {}
    return touch(at, user=user, anon=anon, kind="identify", traits=traits)


@contextmanager
def sessions(url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@contextmanager
def migrated_sessions(directory: Path) -> Iterator[sessionmaker[Session]]:
    """Sessions on a new SQLite database in `directory` with every migration applied."""
    url = f"sqlite:///{directory / 'touchline.db'}"
    upgrade(url)
    with sessions(url) as factory:
        yield factory


def feed(
    factory: sessionmaker[Session], engine: LifecycleEngine, batch: Sequence[Touchpoint]
) -> None:
    """Apply one batch as the consumer loop does: processed-message dedup, then the handler."""
    with factory.begin() as session:
        keys = [(e.message_id, dedup_scope(e.source, id_hash(e.customer_key))) for e in batch]
        new = mark_processed(session, "lifecycle", [(m, s, "") for m, s in keys])
        fresh, seen = [], set()
        for key, event in zip(keys, batch, strict=True):
            if key in new and key not in seen:
                seen.add(key)
                fresh.append(event)
        engine.apply(session, fresh)


def state(session: Session, any_id: str) -> dict[str, Any] | None:
    """A customer's lifecycle row (minus bookkeeping), ids and transitions, found by any id."""
    customer = queries.customer_of(session, any_id)
    if customer is None:
        return None
    row = session.execute(
        select(lifecycle_customers).where(lifecycle_customers.c.customer_id == customer)
    ).one()
    values = dict(row._mapping)
    del values["updated_at"]
    values["revenue"] = round(values["revenue"], 6)
    values["ids"] = queries.ids_of(session, customer)
    values["transitions"] = sorted(
        [
            (t.kind, t.from_stage, t.to_stage, t.at, t.message_id, t.channel, t.touch_path)
            for t in queries.journey(session, customer)
        ],
        key=lambda t: (t[3], t[0], t[2]),
    )
    values["funnel"] = funnel_rows(session, customer)
    return values


def funnel_rows(session: Session, customer: str) -> list[tuple[Any, ...]]:
    """The customer's funnel rows as stored (credits rounded)."""
    rows = session.execute(
        select(lifecycle_funnel).where(lifecycle_funnel.c.customer_id == customer)
    ).all()
    return sorted(tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows)


def derived_funnel(session: Session, customer: str) -> list[tuple[Any, ...]]:
    """The funnel rows recomputed from the customer's stored journey: live stage entries (after
    the latest reset) with their paths' credits and their orders' amounts."""
    row = session.execute(
        select(lifecycle_customers.c.reset_at).where(lifecycle_customers.c.customer_id == customer)
    ).one()
    amounts = {
        o.message_id: o.amount
        for o in session.execute(
            select(lifecycle_orders).where(lifecycle_orders.c.customer_id == customer)
        )
    }
    entries = [
        FunnelEntry(
            customer_id=customer,
            stage=t.to_stage,
            at=t.at,
            channel=t.channel or "other",
            value=amounts.get(t.message_id, 0.0),
            credits=credits(decode_path(t.touch_path), t.at),
        )
        for t in queries.journey(session, customer)
        if t.kind == "stage" and (row.reset_at is None or t.at > row.reset_at)
    ]
    return sorted(
        tuple(round(v, 9) if isinstance(v, float) else v for v in funnel_row(e).values())
        for e in entries
    )


_when = st.integers(0, 420)
_channel = st.sampled_from(CHANNELS)
# One person's events as specs for `person_events`: the property tests' input.
person_steps = st.lists(
    st.one_of(
        st.tuples(st.just("touch"), _when, _channel, st.sampled_from(["anon", "user", "both"])),
        st.tuples(st.just("engage"), _when, _channel, st.sampled_from(["anon", "user"])),
        st.tuples(st.just("identify"), _when, _channel, st.booleans()),
        st.tuples(st.just("alias"), _when, _channel, st.just(None)),
        st.tuples(st.just("order"), _when, st.integers(0, 5), st.floats(1, 400)),
        st.tuples(st.just("refund"), _when, st.integers(0, 5), st.floats(1, 100)),
    ),
    min_size=1,
    max_size=20,
)


def person_events(run: str, spec: list[tuple[Any, ...]]) -> list[Touchpoint]:
    """One person's events (ids prefixed by `run`): anonymous, identified and aliased touches,
    engagement, orders (the same order id always the same time and amount) and refunds."""
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
