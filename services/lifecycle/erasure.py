"""GDPR erasure in the lifecycle service: a customer, every id merged into it, and everything
stored about them (profile, ids, touches, orders, refunds, journey, funnel entries, unsent stage
changes, processed-message records). The ids are suppressed (shared.privacy) and the erasure goes
out on `privacy.erasures.v1` through the outbox, so scoring and ingest learn every merged id too.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, Table, delete, select
from sqlalchemy.orm import Session

from services.lifecycle.tables import (
    lifecycle_customers,
    lifecycle_funnel,
    lifecycle_ids,
    lifecycle_orders,
    lifecycle_outbox,
    lifecycle_refunds,
    lifecycle_touches,
    lifecycle_transitions,
)
from shared import privacy
from shared.events import STAGE_CHANGES, Erasure
from shared.outbox import enqueue
from shared.privacy import ErasureReport

CONSUMER = "lifecycle"
BY_CUSTOMER = (
    lifecycle_touches,
    lifecycle_orders,
    lifecycle_refunds,
    lifecycle_transitions,
    lifecycle_funnel,
    lifecycle_customers,
)


def erase(session: Session, requested: Iterable[str], *, announce: bool) -> ErasureReport:
    """Erase the customers these ids belong to, with all their ids. The erasure is published when
    `announce` is set (an API request) or when merged ids beyond the requested ones were found
    (an erasure read from the topic), so every service erases the same ids."""
    asked = set(requested)
    processed = privacy.suppress(session, CONSUMER, asked)  # the first write: takes the lock
    i = lifecycle_ids.c
    customers = set(session.scalars(select(i.customer_id).where(i.id.in_(sorted(asked)))))
    ids = asked | customers
    ids |= set(session.scalars(select(i.id).where(i.customer_id.in_(sorted(customers)))))
    if ids - asked:
        processed += privacy.suppress(session, CONSUMER, ids - asked)

    def remove(table: Table, condition: ColumnElement[bool]) -> None:
        result = session.execute(delete(table).where(condition))
        deleted[table.name] = int(result.rowcount)  # type: ignore[attr-defined]

    deleted = {"processed_messages": processed}
    for table in BY_CUSTOMER:
        remove(table, table.c.customer_id.in_(sorted(customers)))
    remove(lifecycle_ids, i.id.in_(sorted(ids)))
    box = lifecycle_outbox.c
    remove(lifecycle_outbox, (box.topic == STAGE_CHANGES) & box.key.in_(sorted(ids)))
    publish = announce or bool(ids - asked)
    if publish:
        enqueue(session, lifecycle_outbox, [privacy.erasure(ids, origin=CONSUMER)])
    return ErasureReport(ids=sorted(ids), deleted_rows=deleted, published=publish)


def erase_from_topic(session: Session, message: Erasure) -> None:
    """The erasure worker's eraser: ids known only by their hash can be suppressed, not erased."""
    if message.id_hashes:
        privacy.suppress_hashes(session, CONSUMER, message.id_hashes)
    if message.ids:
        erase(session, message.ids, announce=False)
