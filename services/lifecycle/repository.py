"""Writes of the lifecycle service: a batch's row changes (`write`, from the fold's `Writes`) and
the outbox. Never commits: the consumer loop or the API route does. Reads are in `queries`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, event, update
from sqlalchemy.orm import Session

from services.lifecycle import metrics as own_metrics
from services.lifecycle.attribution import MODELS
from services.lifecycle.fold import FunnelEntry, NewTransition, Profile, Writes
from services.lifecycle.journey import Transition
from services.lifecycle.queries import chunks
from services.lifecycle.stages import Mark, Order, Refund
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
from shared.db import execute_many, once_per_dialect, upsert_into
from shared.events import StageChange


def write(session: Session, changes: Writes, now: datetime) -> None:
    """Store a batch's row changes (an identity merge's re-keying first)."""
    move_customers(session, changes.moves)
    link_ids(session, changes.links)
    add_touches(session, changes.touches)
    delete_transitions(session, changes.deletes)
    update_transitions(session, changes.updates)
    add_transitions(session, changes.inserts, now)
    save_funnel(session, changes.stale, changes.funnel)
    save_touched(session, changes.touched, now)
    save_profiles(session, changes.profiles, now)
    save_orders(session, changes.orders)
    save_refunds(session, changes.refunds)


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


def claim(session: Session, any_id: str) -> bool:
    """Start a write on this id's row (an admin change outside the consumer loop): PostgreSQL locks
    the row, SQLite takes its write lock before anything is read. False if the id is unknown."""
    ids_ = lifecycle_ids
    result = session.execute(
        update(ids_).where(ids_.c.id == any_id).values(customer_id=ids_.c.customer_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


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


def add_transitions(session: Session, new: Sequence[NewTransition], now: datetime) -> None:
    """Store new transitions and queue each for `lifecycle.stage-changes.v1` (same transaction)."""
    if not new:
        return
    rows, outbox = [], []
    for item in new:
        tr, mark = item.transition, item.transition.mark
        message_id, channel = mark.message_id or None, mark.channel or None
        row = {
            "id": item.id,
            "customer_id": item.customer_id,
            "kind": tr.kind,
            "from_stage": tr.from_stage,
            "to_stage": tr.to_stage,
            "at": mark.at,
            "message_id": message_id,
            "channel": channel,
            "touch_path": item.touch_path,
            "recorded_at": now,
            "note": item.note,
        }
        rows.append(row)
        payload = StageChange.encode(
            transition_id=item.id,
            customer_id=item.customer_id,
            kind=tr.kind,
            from_stage=tr.from_stage,
            to_stage=tr.to_stage,
            at=mark.at,
            channel=channel,
            message_id=message_id,
            recorded_at=now,
        )
        outbox.append({"key": item.customer_id, "payload": payload.decode(), "created_at": now})
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
            own_metrics.TRANSITIONS.labels(kind, stage, channel or "none").inc(n)

    event.listen(session, "after_commit", count, once=True)


def update_transitions(session: Session, changes: Sequence[tuple[str, Transition, str]]) -> None:
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
                    "new_path": path,
                }
                for row_id, tr, path in changes
            ],
        )


def delete_transitions(session: Session, ids: Sequence[str]) -> None:
    for chunk in chunks(ids):
        session.execute(delete(lifecycle_transitions).where(lifecycle_transitions.c.id.in_(chunk)))


def utcnow() -> datetime:
    return datetime.now(UTC)
