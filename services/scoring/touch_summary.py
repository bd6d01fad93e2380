"""Per-customer touch summary (first seen and its channel, last seen and its channel, event
count).

The minimal state both consumers keep until their real domain models replace it. Order-free: the
same events in any order give the same row (ties in time: the last channel is the greater name,
the first channel the smaller).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, case
from sqlalchemy.orm import Session

from shared.db import execute_many, once_per_dialect, upsert_into
from shared.events import Touchpoint

SUMMARY_COLUMNS = (
    "customer_id",
    "first_seen",
    "last_seen",
    "event_count",
    "last_channel",
    "first_channel",
)


@dataclass
class TouchSummary:
    first_seen: datetime
    last_seen: datetime
    event_count: int
    last_channel: str
    first_channel: str

    def add(self, event: Touchpoint) -> None:
        if (event.timestamp, event.channel) < (self.first_seen, self.first_channel):
            self.first_seen, self.first_channel = event.timestamp, event.channel
        if (event.timestamp, event.channel) > (self.last_seen, self.last_channel):
            self.last_seen, self.last_channel = event.timestamp, event.channel
        self.event_count += 1


def summarise(events: Sequence[Touchpoint]) -> dict[str, TouchSummary]:
    summaries: dict[str, TouchSummary] = {}
    for event in events:
        summary = summaries.get(event.customer_key)
        if summary is None:
            summaries[event.customer_key] = TouchSummary(
                event.timestamp, event.timestamp, 1, event.channel, event.channel
            )
        else:
            summary.add(event)
    return summaries


def upsert_summaries(
    session: Session,
    table: Table,
    events: Sequence[Touchpoint],
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Merge a batch of touchpoints into `table`, one upsert per customer.

    `extra` gives, per customer, more columns of the same row to overwrite in the same statement
    (the scoring service's purchase counters), saving a second write of those rows.
    """
    extra = extra or {}
    plain, extended = [], []
    for customer_id, summary in summarise(events).items():
        row = {"customer_id": customer_id, **vars(summary)}
        if customer_id in extra:
            extended.append({**row, **extra[customer_id]})
        else:
            plain.append(row)
    for rows in (plain, extended):
        if rows:
            execute_many(
                session,
                _upsert(session, table, frozenset(rows[0]) - set(SUMMARY_COLUMNS)),
                rows,
            )


@once_per_dialect
def _upsert(session: Session, table: Table, overwrite: frozenset[str]) -> Any:
    stmt = upsert_into(session, table)
    new, old = stmt.excluded, table.c
    newer = (new.last_seen > old.last_seen) | (
        (new.last_seen == old.last_seen) & (new.last_channel > old.last_channel)
    )
    earlier = (new.first_seen < old.first_seen) | (
        (new.first_seen == old.first_seen) & (new.first_channel < old.first_channel)
    )
    return stmt.on_conflict_do_update(
        index_elements=[old.customer_id],
        set_={
            "first_seen": case((earlier, new.first_seen), else_=old.first_seen),
            "first_channel": case((earlier, new.first_channel), else_=old.first_channel),
            "last_seen": case((newer, new.last_seen), else_=old.last_seen),
            "last_channel": case((newer, new.last_channel), else_=old.last_channel),
            "event_count": old.event_count + new.event_count,
            **{column: new[column] for column in sorted(overwrite)},
        },
    )


def load_summary(session: Session, table: Table, customer_id: str) -> dict[str, object] | None:
    row = session.execute(table.select().where(table.c.customer_id == customer_id)).first()
    return dict(row._mapping) if row else None
