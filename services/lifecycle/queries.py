"""Reads of the lifecycle service: the state a batch folds (`load`, under the ids' and profiles'
row locks) and the API's reads.

Locking (PostgreSQL): a batch first locks the rows of every id it carries, sorted, then the rows of
the customers they resolve to, sorted; so two instances working on different partitions serialise
on a shared customer (an identity merge spanning partitions). SQLite runs one writer at a time,
and every writing transaction starts with a write (the consumer loop's processed-message insert,
`repository.claim` for an admin change), so nothing it reads can go stale before it commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, bindparam, func, select
from sqlalchemy.orm import Session

from services.lifecycle import fold
from services.lifecycle.fold import Profile, Rules, State, TouchRow
from services.lifecycle.identity import Identities
from services.lifecycle.journey import Stored
from services.lifecycle.stages import Facts, Mark, Order, Refund, Reset
from services.lifecycle.tables import (
    lifecycle_customers,
    lifecycle_ids,
    lifecycle_orders,
    lifecycle_refunds,
    lifecycle_touches,
    lifecycle_transitions,
)
from shared.db import once_per_dialect, upsert_into
from shared.events import Touchpoint

CHUNK = 500


def chunks(items: Iterable[Any]) -> Iterator[list[Any]]:
    ordered = sorted(items)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


def load(session: Session, rules: Rules, events: Sequence[Touchpoint]) -> State:
    """Everything folding `events` needs, in a few queries: the batch's ids (locked, the new
    ones created) resolved, the profiles they name, and for the customers whose journey the batch
    recomputes their orders, refunds, transitions and the touches their paths need."""
    graph, read = lock_ids(session, fold.batch_ids(events))
    owned = fold.owners(graph, events)
    profiles = load_profiles(
        session, set(owned) | {absorbed for absorbed, _ in graph.merges}, read=read
    )
    journeys = fold.journeys(rules, graph, profiles, owned, events)
    complete_profiles(session, [p for c, p in profiles.items() if c in journeys])
    transitions = load_transitions(session, journeys)
    state = State(graph, profiles, journeys, transitions, owners=owned)
    if journeys:
        state.touches = load_touches(session, fold.touch_windows(rules, state, events))
    return state


def load_customer(
    session: Session, rules: Rules, any_id: str, stage: str, now: datetime
) -> tuple[str, State]:
    """A stored customer's whole state (the id locked) for an admin reset to `stage` at `now`."""
    graph, read = lock_ids(session, {any_id})
    customer = graph.customer_of[any_id]
    profile = load_profiles(session, [customer], read=read)[customer]
    complete_profiles(session, [profile])
    state = State(graph, {customer: profile}, {customer}, load_transitions(session, [customer]))
    state.touches = load_touches(session, fold.reset_windows(rules, state, customer, stage, now))
    return customer, state


# The one write of a load: ids never seen are stored as customers of their own (the insert
# waits for a concurrent instance's commit, so what it did not create is locked after it).
@once_per_dialect
def _new_ids(session: Session) -> Any:
    return (
        upsert_into(session, lifecycle_ids).on_conflict_do_nothing().returning(lifecycle_ids.c.id)
    )


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

    for chunk in chunks(ids):
        lock(chunk)
    missing = sorted(ids - customer_of.keys())
    if missing:
        created = set(
            session.scalars(_new_ids(session), [{"id": i, "customer_id": i} for i in missing])
        )
        customer_of.update((i, i) for i in created)
        read.update((i, None) for i in created)
        # Created meanwhile by another instance (the insert waited for its commit): lock them now.
        for chunk in chunks(set(missing) - created):
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
    for chunk in chunks(wanted):
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
    for chunk in chunks(by_id):
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
    for chunk in chunks(customer_ids):
        for row in session.execute(query.where(t.customer_id.in_(chunk))):
            customer, id_, kind, from_stage, to_stage, at, message_id, channel, path = row
            mark = Mark(at, message_id or "", channel or "")
            result.setdefault(customer, []).append(
                Stored(id_, kind, from_stage, to_stage, mark, path)
            )
    return result


def load_touches(session: Session, since: Mapping[str, datetime]) -> dict[str, list[TouchRow]]:
    """Each customer's touches from its `since` on (customers with close bounds share a query)."""
    t = lifecycle_touches.c
    result: dict[str, list[TouchRow]] = {}
    items = sorted(since.items(), key=lambda item: item[1])
    for start in range(0, len(items), CHUNK):
        chunk = dict(items[start : start + CHUNK])
        rows = session.execute(
            select(t.customer_id, t.at, t.message_id, t.channel).where(
                t.customer_id.in_(sorted(chunk)), t.at >= min(chunk.values())
            )
        )
        for customer, at, message_id, channel in rows:
            if at >= chunk[customer]:
                result.setdefault(customer, []).append((at, message_id, channel))
    return result


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
