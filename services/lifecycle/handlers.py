"""Lifecycle handler: folds touchpoints into the per-customer summary (minimal model)."""

from collections.abc import Sequence

from sqlalchemy.orm import Session

from services.lifecycle.tables import lifecycle_customers
from shared.events import Touchpoint
from shared.touch_summary import upsert_summaries


def apply(session: Session, events: Sequence[Touchpoint]) -> None:
    upsert_summaries(session, lifecycle_customers, events)
