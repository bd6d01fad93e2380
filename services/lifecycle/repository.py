"""SQL of the lifecycle service: identities (locked), customer profiles, touches, orders,
refunds, transitions and the outbox. Never commits: the consumer loop or the API route does.

Locking (PostgreSQL): a batch first locks the rows of every id it carries, sorted, then the rows of
the customers they resolve to, sorted; so two instances working on different partitions serialise
on a shared customer (an identity merge spanning partitions). SQLite serialises writers anyway:
the transaction's first statement is a write, so no read can go stale.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from services.lifecycle.identity import Identities
from services.lifecycle.journey import Path, Stored, Touch, Transition
from services.lifecycle.stages import Facts, Mark, Order, Refund, Reset
from services.lifecycle.tables import (
    lifecycle_customers,
    lifecycle_ids,
    lifecycle_orders,
    lifecycle_outbox,
    lifecycle_refunds,
    lifecycle_touches,
    lifecycle_transitions,
)
from shared.db import upsert_into
from shared.events import StageChange

CHUNK = 500


def _chunks(items: Iterable[Any]) -> Iterator[list[Any]]:
    ordered = sorted(items)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


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


def lock_ids(session: Session, ids: set[str]) -> Identities:
    """Create the rows of new ids (each its own customer until linked) and lock every id's row."""
    for chunk in _chunks(ids):
        session.execute(
            upsert_into(session, lifecycle_ids).on_conflict_do_nothing(),
            [{"id": i, "customer_id": i} for i in chunk],
        )
    customer_of: dict[str, str] = {}
    existing: set[str] = set()
    known: set[str] = set()
    ids_, customers = lifecycle_ids, lifecycle_customers
    for chunk in _chunks(ids):
        rows = session.execute(
            select(ids_.c.id, ids_.c.customer_id, customers.c.known)
            .outerjoin(customers, customers.c.customer_id == ids_.c.customer_id)
            .where(ids_.c.id.in_(chunk))
            .order_by(ids_.c.id)
            .with_for_update(of=ids_)
        )
        for row in rows:
            customer_of[row.id] = row.customer_id
            if row.known is not None:
                existing.add(row.customer_id)
                if row.known:
                    known.add(row.customer_id)
    return Identities(customer_of, existing, known)


def load_profiles(
    session: Session, customer_ids: Iterable[str], lock: bool = True
) -> dict[str, Profile]:
    """The stored profiles of these customers, locked for this transaction unless `lock` is off."""
    c = lifecycle_customers.c
    profiles: dict[str, Profile] = {}
    for chunk in _chunks(customer_ids):
        query = select(lifecycle_customers).where(c.customer_id.in_(chunk))
        rows = session.execute(query.order_by(c.customer_id).with_for_update() if lock else query)
        for row in rows:
            profiles[row.customer_id] = _profile(row)
    return profiles


def _profile(row: Any) -> Profile:
    engaged = None
    if row.engaged_at is not None:
        engaged = Mark(row.engaged_at, row.engaged_message, row.engaged_channel)
    facts = Facts(
        first_touch=Mark(row.first_touch_at, row.first_touch_message, row.first_touch_channel),
        last_touch_at=row.last_touch_at,
        engaged=engaged,
        reset=Reset(row.reset_stage, row.reset_at) if row.reset_at is not None else None,
    )
    return Profile(
        customer_id=row.customer_id,
        known=row.known,
        facts=facts,
        event_count=row.event_count,
        order_count=row.order_count,
        revenue=row.revenue,
        last_order_at=row.last_order_at,
        stage=row.stage,
        stage_entered_at=row.stage_entered_at,
        last_transition_at=row.last_transition_at,
        complete=False,
        stored=True,
    )


def complete_profiles(session: Session, profiles: Sequence[Profile]) -> None:
    """Load the orders and refunds of these stored profiles into their facts."""
    by_id = {p.customer_id: p for p in profiles if not p.complete}
    for chunk in _chunks(by_id):
        for row in session.execute(
            select(lifecycle_orders).where(lifecycle_orders.c.customer_id.in_(chunk))
        ):
            profile = by_id[row.customer_id]
            mark = Mark(row.at, row.message_id, row.channel)
            profile.facts = profile.facts.ordered(Order(row.order_id, mark, row.amount))
        for row in session.execute(
            select(lifecycle_refunds).where(lifecycle_refunds.c.customer_id.in_(chunk))
        ):
            profile = by_id[row.customer_id]
            mark = Mark(row.at, row.message_id, row.channel)
            profile.facts = profile.facts.refunded(Refund(mark, row.amount))
    for profile in by_id.values():
        profile.complete = True


def move_customer(session: Session, absorbed: str, into: str) -> None:
    """Re-key everything of `absorbed` to `into` (an identity merge). Orders are rewritten from the
    merged facts by `save`, so the absorbed customer's rows are dropped here."""
    for table in (lifecycle_ids, lifecycle_touches, lifecycle_refunds, lifecycle_transitions):
        session.execute(
            update(table).where(table.c.customer_id == absorbed).values(customer_id=into)
        )
    session.execute(delete(lifecycle_orders).where(lifecycle_orders.c.customer_id == absorbed))
    session.execute(
        delete(lifecycle_customers).where(lifecycle_customers.c.customer_id == absorbed)
    )


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
        session.execute(
            upsert_into(session, lifecycle_touches).on_conflict_do_nothing(),
            [
                {"customer_id": c, "at": m.at, "message_id": m.message_id, "channel": m.channel}
                for c, m in touches
            ],
        )


def load_transitions(session: Session, customer_ids: Iterable[str]) -> dict[str, list[Stored]]:
    t = lifecycle_transitions.c
    result: dict[str, list[Stored]] = {}
    for chunk in _chunks(customer_ids):
        for row in session.execute(select(lifecycle_transitions).where(t.customer_id.in_(chunk))):
            result.setdefault(row.customer_id, []).append(
                Stored(
                    id=row.id,
                    kind=row.kind,
                    from_stage=row.from_stage,
                    to_stage=row.to_stage,
                    mark=Mark(row.at, row.message_id or "", row.channel or ""),
                    path=decode_path(row.touch_path),
                )
            )
    return result


def load_touches(session: Session, since: Mapping[str, datetime]) -> dict[str, list[Touch]]:
    """Each customer's touches from its `since` on."""
    t = lifecycle_touches.c
    result: dict[str, list[Touch]] = {}
    items = sorted(since.items())
    for start in range(0, len(items), 100):
        condition = or_(
            *(and_(t.customer_id == c, t.at >= at) for c, at in items[start : start + 100])
        )
        for row in session.execute(select(t.customer_id, t.at, t.channel).where(condition)):
            result.setdefault(row.customer_id, []).append(Touch(row.at, row.channel))
    return result


def encode_path(path: Path) -> str:
    return orjson.dumps([[t.at.isoformat(), t.channel] for t in path]).decode()


def decode_path(text: str) -> Path:
    return tuple(Touch(datetime.fromisoformat(at), channel) for at, channel in orjson.loads(text))


def save_profiles(session: Session, profiles: Sequence[Profile], now: datetime) -> None:
    rows = [_row(p, now) for p in sorted(profiles, key=lambda p: p.customer_id)]
    if not rows:
        return
    stmt = upsert_into(session, lifecycle_customers)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[lifecycle_customers.c.customer_id],
            set_={k: stmt.excluded[k] for k in rows[0] if k != "customer_id"},
        ),
        rows,
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
    stmt = upsert_into(session, lifecycle_orders)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[lifecycle_orders.c.customer_id, lifecycle_orders.c.order_id],
            set_={k: stmt.excluded[k] for k in ("at", "message_id", "channel", "amount")},
        ),
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
    for item in new:
        tr, mark = item.transition, item.transition.mark
        change = StageChange(
            transition_id=uuid.uuid4().hex,
            customer_id=item.customer_id,
            kind=tr.kind,  # type: ignore[arg-type]
            from_stage=tr.from_stage,
            to_stage=tr.to_stage,
            at=mark.at,
            channel=mark.channel or None,
            message_id=mark.message_id or None,
            recorded_at=now,
        )
        rows.append(
            {
                "id": change.transition_id,
                "customer_id": item.customer_id,
                "kind": tr.kind,
                "from_stage": tr.from_stage,
                "to_stage": tr.to_stage,
                "at": mark.at,
                "message_id": change.message_id,
                "channel": change.channel,
                "touch_path": encode_path(item.path),
                "recorded_at": now,
                "note": item.note,
            }
        )
        outbox.append(
            {"key": item.customer_id, "payload": change.to_json().decode(), "created_at": now}
        )
    session.execute(lifecycle_transitions.insert(), rows)
    session.execute(lifecycle_outbox.insert(), outbox)


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
