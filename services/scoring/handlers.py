"""Scoring handler: per batch, the touch summary plus purchase counters and the live RFM
population, in the consumer loop's transaction."""

from collections.abc import Sequence

from sqlalchemy.orm import Session

from services.scoring import repository
from services.scoring.counters import PurchaseBook
from services.scoring.rfm import RfmValues, population_deltas
from services.scoring.tables import scoring_customers
from services.scoring.touch_summary import upsert_summaries
from shared.events import ORDER_COMPLETED, Touchpoint


def apply_purchases(book: PurchaseBook, purchases: Sequence[Touchpoint]) -> None:
    for event in purchases:
        amount = event.revenue or 0.0
        if event.event == ORDER_COMPLETED:
            book.complete(event.customer_key, event.order_id, event.timestamp, amount)
        else:  # a refund subtracts, whether sent positive (Segment's spec) or negative
            book.refund(event.customer_key, event.order_id, abs(amount))


def apply(session: Session, events: Sequence[Touchpoint]) -> None:
    purchases = [e for e in events if e.purchase]
    if not purchases:
        upsert_summaries(session, scoring_customers, events)
        return
    book = repository.load_book(
        session,
        {(e.customer_key, e.order_id) for e in purchases},
        {(e.customer_key, e.timestamp.date()) for e in purchases if e.event == ORDER_COMPLETED},
    )
    before = {c: RfmValues.of(counters) for c, counters in book.counters.items()}
    apply_purchases(book, purchases)
    changes = [(before.get(c), RfmValues.of(counters)) for c, counters in book.counters.items()]
    counters = {c: vars(counters) for c, counters in book.counters.items()}
    upsert_summaries(session, scoring_customers, events, extra=counters)
    repository.save_book(session, book)
    repository.add_to_population(session, population_deltas(changes))
