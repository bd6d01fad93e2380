"""GDPR erasure in the scoring service: the ids' counters, orders and purchase days, their place
in the RFM population and their processed-message records; the ids are suppressed from then on
(shared.privacy). Scoring knows no identity merges: lifecycle's erasure names every merged id.
An erasure asked of scoring's API goes out through its outbox, so lifecycle learns of it."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete
from sqlalchemy.orm import Session

from services.scoring import repository
from services.scoring.rfm import RfmValues, population_deltas
from services.scoring.tables import (
    scoring_customers,
    scoring_days,
    scoring_orders,
    scoring_outbox,
)
from shared import privacy
from shared.events import Erasure
from shared.outbox import enqueue
from shared.privacy import ErasureReport

CONSUMER = "scoring"


def erase(session: Session, requested: Iterable[str], *, announce: bool = False) -> ErasureReport:
    """Erase these ids; with `announce` (an API request) the erasure is published after the
    commit, so lifecycle erases the customer they belong to and passes every merged id back."""
    ids = sorted(set(requested))
    processed = privacy.suppress(session, CONSUMER, ids)  # the first write: takes the lock
    book = repository.load_book(session, {(i, "") for i in ids}, set())
    leaving = [(RfmValues.of(counters), None) for counters in book.counters.values()]
    repository.add_to_population(session, population_deltas(leaving))
    deleted = {"processed_messages": processed}
    for table in (scoring_orders, scoring_days, scoring_customers):
        result = session.execute(delete(table).where(table.c.customer_id.in_(ids)))
        deleted[table.name] = int(result.rowcount)  # type: ignore[attr-defined]
    if announce:
        enqueue(session, scoring_outbox, [privacy.erasure(ids, origin=CONSUMER)])
    return ErasureReport(ids=ids, deleted_rows=deleted, published=announce)


def erase_from_topic(session: Session, message: Erasure) -> None:
    """The erasure worker's eraser: ids known only by their hash can be suppressed, not erased."""
    if message.id_hashes:
        privacy.suppress_hashes(session, CONSUMER, message.id_hashes)
    if message.ids:
        erase(session, message.ids)
