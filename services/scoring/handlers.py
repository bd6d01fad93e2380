"""Scoring handler: folds touchpoints into the per-customer summary (minimal model)."""

from collections.abc import Sequence

from sqlalchemy.orm import Session

from services.scoring.tables import scoring_customers
from shared.events import Touchpoint
from shared.touch_summary import upsert_summaries


def apply(session: Session, events: Sequence[Touchpoint]) -> None:
    upsert_summaries(session, scoring_customers, events)
