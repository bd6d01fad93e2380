"""SQL of the lifecycle service: identities (locked), customer profiles, touches, orders,
refunds, transitions and the outbox. Never commits: the consumer loop or the API route does.

Locking (PostgreSQL): a batch first locks the rows of every id it carries, sorted, then the rows of
the customers they resolve to, sorted; so two instances working on different partitions serialise
on a shared customer (an identity merge spanning partitions). SQLite runs one writer at a time,
and every writing transaction starts with a write (the consumer loop's processed-message insert,
`claim` for an admin change), so nothing it reads can go stale before it commits.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import RowMapping, bindparam, delete, event, func, select, update
from sqlalchemy.orm import Session

from services.lifecycle.attribution import MODELS
from services.lifecycle.identity import Identities
from services.lifecycle.journey import Path, Stored, Touch, Transition, encode_path
from services.lifecycle.stages import Facts, Mark, Order, Refund, Reset
from services.lifecycle.tables import (
    CHANNELS,
    credit_column,
    lifecycle_customers,
    lifecycle_funnel,
    lifecycle_ids,
    lifecycle_orders,
    lifecycle_outbox,
    lifecycle_refunds,
    lifecycle_touches,
    lifecycle_transitions,
)
from shared import metrics
from shared.db import execute_many, once_per_dialect, upsert_into

CHUNK = 500


def _chunks(items: Iterable[Any]) -> Iterator[list[Any]]:
    ordered = sorted(items)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


# Statements of the hot path, built once (see shared.db.once_per_dialect).


@once_per_dialect
def _touch_insert(session: Session) -> Any:
    return upsert_into(session, lifecycle_touches).on_conflict_do_nothing()


@once_per_dialect
def _profile_upsert(session: Session) -> Any:
    stmt = upsert_into(session, lifecycle_customers)
    return stmt.on_conflict_do_update(
        index_elements=[lifecycle_customers.c.customer_id],
        set_={c.name: stmt.excluded[c.name] for c in lifecycle_customers.c if not c.primary_key},
    )


@once_per_dialect
def _order_upsert(session: Session) -> Any:
    stmt = upsert_into(session, lifecycle_orders)
    return stmt.on_conflict_do_update(
        index_elements=[lifecycle_orders.c.customer_id, lifecycle_orders.c.order_id],
        set_={k: stmt.excluded[k] for k in ("at", "message_id", "channel", "amount")},
    )


@once_per_dialect
def _new_ids(session: Session) -> Any:
    return (
        upsert_into(session, lifecycle_ids).on_conflict_do_nothing().returning(lifecycle_ids.c.id)
    )


_TOUCHED = (
    update(lifecycle_customers)
    .where(lifecycle_customers.c.customer_id == bindparam("id"))
    .values(
        last_touch_at=bindparam("last"),
        event_count=bindparam("events"),
        updated_at=bindparam("now"),
    )
)
_FUNNEL_DELETE = delete(lifecycle_funnel).where(
    lifecycle_funnel.c.customer_id == bindparam("stale_customer"),
    lifecycle_funnel.c.stage == bindparam("stale_stage"),
)
_FUNNEL_INSERT = lifecycle_funnel.insert()
_TRANSITION_INSERT = lifecycle_transitions.insert()
_OUTBOX_INSERT = lifecycle_outbox.insert()


@dataclass
class Profile:
    """One customer's state as the handler works on it.

    `complete`: orders and refunds are loaded into `facts` (needed to recompute the journey);
    otherwise the purchase counters are the stored ones and do not change.
    """

    customer_id: str
    known: bool
    facts: Facts
    event_count: int = 0
    order_count: int = 0
    revenue: float = 0.0
    last_order_at: datetime | None = None
    stage: str | None = None
    stage_entered_at: datetime | None = None
    last_transition_at: datetime | None = None
    complete: bool = True
    stored: bool = False  # has a row


def claim(session: Session, any_id: str) -> bool:
    """Start a write on this id's row (an admin change outside the consumer loop): PostgreSQL locks
    the row, SQLite takes its write lock before anything is read. False if the id is unknown."""
    ids_ = lifecycle_ids
    result = session.execute(
        update(ids_).where(ids_.c.id == any_id).values(customer_id=ids_.c.customer_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


_IDS_WITH_PROFILES = (
    select(
        lifecycle_ids.c.id.label("lookup_id"),
        lifecycle_ids.c.customer_id.label("lookup_customer"),
        lifecycle_customers,
    )
    .outerjoin(
        lifecycle_customers, lifecycle_customers.c.customer_id == lifecycle_ids.c.customer_id
    )
    .where(lifecycle_ids.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(lifecycle_ids.c.id)
    .with_for_update(of=lifecycle_ids)
)


def lock_ids(session: Session, ids: set[str]) -> tuple[Identities, dict[str, Profile | None]]:
    """Lock the rows of the given ids, creating those never seen (each its own customer until an
    event links it), and return their slice of the identity graph, with the stored profile (or
    None) of every customer it names, read by the same query: pass them on to `load_profiles`."""
    customer_of: dict[str, str] = {}
    existing: set[str] = set()
    known: set[str] = set()
    read: dict[str, Profile | None] = {}

    def lock(chunk: list[str]) -> None:
        for row in session.execute(_IDS_WITH_PROFILES, {"ids": chunk}).mappings():
            customer = customer_of[row["lookup_id"]] = row["lookup_customer"]
            if customer in read:
                continue
            if row["customer_id"] is None:
                read[customer] = None
                continue
            read[customer] = _profile(row)
            existing.add(customer)
            if row["known"]:
                known.add(customer)

    for chunk in _chunks(ids):
        lock(chunk)
    missing = sorted(ids - customer_of.keys())
    if missing:
        created = set(
            session.scalars(_new_ids(session), [{"id": i, "customer_id": i} for i in missing])
        )
        customer_of.update((i, i) for i in created)
        read.update((i, None) for i in created)
        # Created meanwhile by another instance (the insert waited for its commit): lock them now.
        for chunk in _chunks(set(missing) - created):
            lock(chunk)
    return Identities(customer_of, existing, known), read


_PROFILES = select(lifecycle_customers).where(
    lifecycle_customers.c.customer_id.in_(bindparam("customers", expanding=True))
)
_PROFILES_LOCKED = _PROFILES.order_by(lifecycle_customers.c.customer_id).with_for_update()


def load_profiles(
    session: Session,
    customer_ids: Iterable[str],
    lock: bool = True,
    read: Mapping[str, Profile | None] | None = None,
) -> dict[str, Profile]:
    """The stored profiles of these customers, locked for this transaction unless `lock` is off.

    `read`: what `lock_ids` read of them in this transaction. SQLite takes it as it is (it runs
    one writer at a time, and the transaction has written already); PostgreSQL reads every
    profile again, under the customers' row locks taken in order."""
    wanted = set(customer_ids)
    if read is not None and wanted <= read.keys() and session.get_bind().dialect.name == "sqlite":
        return {c: p for c in wanted if (p := read[c]) is not None}
    query = _PROFILES_LOCKED if lock else _PROFILES
    profiles: dict[str, Profile] = {}
    for chunk in _chunks(wanted):
        for row in session.execute(query, {"customers": chunk}).mappings():
            profiles[row["customer_id"]] = _profile(row)
    return profiles


def _profile(row: RowMapping) -> Profile:
    """A profile from its row, read by column name through the row's mapping: a Row's attribute
    access costs ~0.5 us (SQLAlchemy 2.1), several times a mapping lookup, and this runs for
    about every event."""
    engaged = None
    if row["engaged_at"] is not None:
        engaged = Mark(row["engaged_at"], row["engaged_message"], row["engaged_channel"])
    reset = None
    if row["reset_at"] is not None:
        reset = Reset(row["reset_stage"], row["reset_at"])
    first_touch = Mark(
        row["first_touch_at"], row["first_touch_message"], row["first_touch_channel"]
    )
    return Profile(
        customer_id=row["customer_id"],
        known=row["known"],
        facts=Facts(first_touch, row["last_touch_at"], engaged, reset=reset),
        event_count=row["event_count"],
        order_count=row["order_count"],
        revenue=row["revenue"],
        last_order_at=row["last_order_at"],
        stage=row["stage"],
        stage_entered_at=row["stage_entered_at"],
        last_transition_at=row["last_transition_at"],
        complete=False,
        stored=True,
    )


def complete_profiles(session: Session, profiles: Sequence[Profile]) -> None:
    """Load the orders and refunds of these stored profiles into their facts."""
    by_id = {p.customer_id: p for p in profiles if not p.complete}
    o, r = lifecycle_orders.c, lifecycle_refunds.c
    orders = select(o.customer_id, o.order_id, o.at, o.message_id, o.channel, o.amount)
    refunds = select(r.customer_id, r.at, r.message_id, r.channel, r.amount)
    for chunk in _chunks(by_id):
        for customer, order_id, at, message_id, channel, amount in session.execute(
            orders.where(o.customer_id.in_(chunk))
        ):
            profile = by_id[customer]
            mark = Mark(at, message_id, channel)
            profile.facts = profile.facts.ordered(Order(order_id, mark, amount))
        for customer, at, message_id, channel, amount in session.execute(
            refunds.where(r.customer_id.in_(chunk))
        ):
            profile = by_id[customer]
            profile.facts = profile.facts.refunded(Refund(Mark(at, message_id, channel), amount))
    for profile in by_id.values():
        profile.complete = True


def move_customers(session: Session, moves: Sequence[tuple[str, str]]) -> None:
    """Re-key everything of each absorbed customer to the one it merged into (identity merges,
    as (absorbed, into) pairs). Orders are rewritten from the merged facts by `save_orders`, so
    the absorbed customers' rows are dropped here."""
    if not moves:
        return
    pairs = [{"absorbed": a, "into": i} for a, i in moves]
    for table in (lifecycle_ids, lifecycle_touches, lifecycle_refunds, lifecycle_transitions):
        session.execute(
            update(table)
            .where(table.c.customer_id == bindparam("absorbed"))
            .values(customer_id=bindparam("into")),
            pairs,
        )
    for table in (lifecycle_orders, lifecycle_customers, lifecycle_funnel):
        session.execute(delete(table).where(table.c.customer_id == bindparam("absorbed")), pairs)


def link_ids(session: Session, links: Mapping[str, str]) -> None:
    if links:
        session.execute(
            update(lifecycle_ids)
            .where(lifecycle_ids.c.id == bindparam("link_id"))
            .values(customer_id=bindparam("link_customer")),
            [{"link_id": i, "link_customer": c} for i, c in sorted(links.items())],
        )


def add_touches(session: Session, touches: Sequence[tuple[str, Mark]]) -> None:
    if touches:
        execute_many(
            session,
            _touch_insert(session),
            [
                {"customer_id": c, "at": m.at, "message_id": m.message_id, "channel": m.channel}
                for c, m in touches
            ],
        )


def load_transitions(session: Session, customer_ids: Iterable[str]) -> dict[str, list[Stored]]:
    t = lifecycle_transitions.c
    result: dict[str, list[Stored]] = {}
    query = select(
        t.customer_id,
        t.id,
        t.kind,
        t.from_stage,
        t.to_stage,
        t.at,
        t.message_id,
        t.channel,
        t.touch_path,
    )
    for chunk in _chunks(customer_ids):
        for row in session.execute(query.where(t.customer_id.in_(chunk))):
            customer, id_, kind, from_stage, to_stage, at, message_id, channel, path = row
            mark = Mark(at, message_id or "", channel or "")
            result.setdefault(customer, []).append(
                Stored(id_, kind, from_stage, to_stage, mark, path)
            )
    return result


def load_touches(session: Session, since: Mapping[str, datetime]) -> dict[str, list[Touch]]:
    """Each customer's touches from its `since` on (customers with close bounds share a query)."""
    t = lifecycle_touches.c
    result: dict[str, list[Touch]] = {}
    items = sorted(since.items(), key=lambda item: item[1])
    for start in range(0, len(items), CHUNK):
        chunk = dict(items[start : start + CHUNK])
        rows = session.execute(
            select(t.customer_id, t.at, t.channel).where(
                t.customer_id.in_(sorted(chunk)), t.at >= min(chunk.values())
            )
        )
        for customer, at, channel in rows:
            if at >= chunk[customer]:
                result.setdefault(customer, []).append(Touch(at, channel))
    return result


def save_profiles(session: Session, profiles: Sequence[Profile], now: datetime) -> None:
    """Write whole profiles (new ones, merged ones, those whose stage facts changed)."""
    rows = [_row(p, now) for p in sorted(profiles, key=lambda p: p.customer_id)]
    if not rows:
        return
    execute_many(session, _profile_upsert(session), rows)


def save_touched(session: Session, profiles: Sequence[Profile], now: datetime) -> None:
    """Write what a touch changes on a stored profile whose stage facts did not move (most
    events): the last touch and the event count."""
    if profiles:
        execute_many(
            session,
            _TOUCHED,
            [
                {
                    "id": p.customer_id,
                    "last": p.facts.last_touch_at,
                    "events": p.event_count,
                    "now": now,
                }
                for p in sorted(profiles, key=lambda p: p.customer_id)
            ],
        )


def _row(p: Profile, now: datetime) -> dict[str, Any]:
    facts = p.facts
    assert facts.first_touch is not None and facts.last_touch_at is not None
    assert p.stage is not None and p.stage_entered_at is not None
    engaged, reset = facts.engaged, facts.reset
    return {
        "customer_id": p.customer_id,
        "known": p.known,
        "first_touch_at": facts.first_touch.at,
        "first_touch_message": facts.first_touch.message_id,
        "first_touch_channel": facts.first_touch.channel,
        "last_touch_at": facts.last_touch_at,
        "engaged_at": engaged.at if engaged else None,
        "engaged_message": engaged.message_id if engaged else None,
        "engaged_channel": engaged.channel if engaged else None,
        "event_count": p.event_count,
        "order_count": p.order_count,
        "revenue": p.revenue,
        "last_order_at": p.last_order_at,
        "stage": p.stage,
        "stage_entered_at": p.stage_entered_at,
        "last_transition_at": p.last_transition_at or p.stage_entered_at,
        "reset_stage": reset.stage if reset else None,
        "reset_at": reset.at if reset else None,
        "updated_at": now,
    }


def save_orders(session: Session, orders: Sequence[tuple[str, Order]]) -> None:
    if not orders:
        return
    execute_many(
        session,
        _order_upsert(session),
        [
            {
                "customer_id": c,
                "order_id": o.order_id,
                "at": o.mark.at,
                "message_id": o.mark.message_id,
                "channel": o.mark.channel,
                "amount": o.amount,
            }
            for c, o in sorted(orders, key=lambda item: (item[0], item[1].order_id))
        ],
    )


def save_refunds(session: Session, refunds: Sequence[tuple[str, Refund]]) -> None:
    if refunds:
        session.execute(
            upsert_into(session, lifecycle_refunds).on_conflict_do_nothing(),
            [
                {
                    "customer_id": c,
                    "message_id": r.mark.message_id,
                    "at": r.mark.at,
                    "channel": r.mark.channel,
                    "amount": r.amount,
                }
                for c, r in refunds
            ],
        )


@dataclass(frozen=True)
class FunnelEntry:
    """A live stage entry with what conversion needs: its channel, the converting order's
    amount, and its credit per channel under every attribution model (attribution.MODELS)."""

    customer_id: str
    stage: str
    at: datetime
    channel: str
    value: float
    credits: Mapping[str, tuple[float, ...]]


def save_funnel(
    session: Session, stale: Sequence[tuple[str, str]], entries: Sequence[FunnelEntry]
) -> None:
    """Drop the funnel rows (customer, stage) in `stale`, then write `entries`."""
    if stale:  # by primary key, row by row (SQLite scans the table for a row-value IN list)
        execute_many(
            session,
            _FUNNEL_DELETE,
            [{"stale_customer": c, "stale_stage": s} for c, s in stale],
        )
    if entries:
        execute_many(session, _FUNNEL_INSERT, [funnel_row(e) for e in entries])


_CREDIT_COLUMNS = [credit_column(model, channel) for model in MODELS for channel in CHANNELS]
_NO_CREDIT = (0.0,) * len(MODELS)


def funnel_row(e: FunnelEntry) -> dict[str, Any]:
    """The entry's row, keys in the table's column order."""
    row: dict[str, Any] = {
        "customer_id": e.customer_id,
        "stage": e.stage,
        "entered_at": e.at,
        "channel": e.channel,
        "value": e.value,
    }
    shares = [e.credits.get(channel) or _NO_CREDIT for channel in CHANNELS]
    row.update(
        zip(_CREDIT_COLUMNS, [s[m] for m in range(len(MODELS)) for s in shares], strict=True)
    )
    return row


def _time_ordered_id() -> str:
    """32 hex digits, creation time first (like UUIDv7): new rows append to the primary key's
    B-tree instead of landing on random pages. The random half comes from `random` (seeded by
    the OS, reseeded in a forked child): os.urandom per row cost a system call each."""
    return f"{time.time_ns():016x}{random.getrandbits(64):016x}"


@dataclass(frozen=True)
class NewTransition:
    customer_id: str
    transition: Transition
    path: Path
    note: str | None = None


def add_transitions(session: Session, new: Sequence[NewTransition], now: datetime) -> None:
    """Store new transitions and queue each for `lifecycle.stage-changes.v1` (same transaction)."""
    if not new:
        return
    rows, outbox = [], []
    recorded = now.isoformat()
    for item in new:
        tr, mark = item.transition, item.transition.mark
        row = {
            "id": _time_ordered_id(),
            "customer_id": item.customer_id,
            "kind": tr.kind,
            "from_stage": tr.from_stage,
            "to_stage": tr.to_stage,
            "at": mark.at,
            "message_id": mark.message_id or None,
            "channel": mark.channel or None,
            "touch_path": encode_path(item.path),
            "recorded_at": now,
            "note": item.note,
        }
        rows.append(row)
        # The StageChange message (shared/events.py), serialised directly: this is per transition.
        payload = {
            "schema": 1,
            "transition_id": row["id"],
            "customer_id": item.customer_id,
            "kind": tr.kind,
            "from_stage": tr.from_stage,
            "to_stage": tr.to_stage,
            "at": mark.at.isoformat(),
            "channel": row["channel"],
            "message_id": row["message_id"],
            "recorded_at": recorded,
        }
        outbox.append(
            {"key": item.customer_id, "payload": orjson.dumps(payload).decode(), "created_at": now}
        )
    execute_many(session, _TRANSITION_INSERT, rows)
    execute_many(session, _OUTBOX_INSERT, outbox)
    counts = Counter(
        (i.transition.kind, i.transition.to_stage, i.transition.mark.channel) for i in new
    )
    _count_when_committed(session, counts)


def _count_when_committed(session: Session, counts: Counter[tuple[str, str, str]]) -> None:
    """Transitions per kind, stage and channel in /metrics, once (and only if) they commit."""

    def count(_: Session) -> None:
        for (kind, stage, channel), n in counts.items():
            metrics.TRANSITIONS.labels(kind, stage, channel or "none").inc(n)

    event.listen(session, "after_commit", count, once=True)


def update_transitions(session: Session, changes: Sequence[tuple[str, Transition, Path]]) -> None:
    if changes:
        t = lifecycle_transitions
        session.execute(
            update(t)
            .where(t.c.id == bindparam("row_id"))
            .values(
                from_stage=bindparam("new_from"),
                at=bindparam("new_at"),
                message_id=bindparam("new_message"),
                channel=bindparam("new_channel"),
                touch_path=bindparam("new_path"),
            ),
            [
                {
                    "row_id": row_id,
                    "new_from": tr.from_stage,
                    "new_at": tr.mark.at,
                    "new_message": tr.mark.message_id,
                    "new_channel": tr.mark.channel,
                    "new_path": encode_path(path),
                }
                for row_id, tr, path in changes
            ],
        )


def delete_transitions(session: Session, ids: Sequence[str]) -> None:
    for chunk in _chunks(ids):
        session.execute(delete(lifecycle_transitions).where(lifecycle_transitions.c.id.in_(chunk)))


# --- reads for the API ------------------------------------------------------------------------


def customer_of(session: Session, any_id: str) -> str | None:
    """The canonical customer of any id it has had (userId, anonymousId, alias)."""
    return session.scalar(select(lifecycle_ids.c.customer_id).where(lifecycle_ids.c.id == any_id))


def ids_of(session: Session, customer_id: str) -> list[str]:
    return list(
        session.scalars(
            select(lifecycle_ids.c.id)
            .where(lifecycle_ids.c.customer_id == customer_id)
            .order_by(lifecycle_ids.c.id)
        )
    )


def journey(session: Session, customer_id: str) -> list[Any]:
    t = lifecycle_transitions.c
    return list(
        session.execute(
            select(lifecycle_transitions)
            .where(t.customer_id == customer_id)
            .order_by(t.at, t.recorded_at, t.id)
        )
    )


def last_touch_before(session: Session, customer_id: str, as_of: datetime) -> datetime | None:
    t = lifecycle_touches.c
    return session.scalar(select(func.max(t.at)).where(t.customer_id == customer_id, t.at <= as_of))


def touches_before(session: Session, customer_id: str, as_of: datetime) -> int:
    t = lifecycle_touches.c
    return (
        session.scalar(select(func.count()).where(t.customer_id == customer_id, t.at <= as_of)) or 0
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
