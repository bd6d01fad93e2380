"""The lifecycle engine: folds a batch of touchpoints into customer profiles and journeys inside
the consumer loop's transaction (and performs the audited admin reset the same way), in three
steps: `queries.load` reads what the batch needs, `fold.fold` (pure) computes the new state and
its row changes, `repository.write` stores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.orm import Session

from services.lifecycle import fold, queries, repository
from services.lifecycle.fold import Profile, Rules
from services.lifecycle.stages import DEFAULT_MODEL, StageModel
from shared.events import Touchpoint
from shared.settings import Settings


class UnknownCustomer(LookupError):
    pass


def build_engine(settings: Settings) -> LifecycleEngine:
    """The engine the settings describe; a bad stage model file raises StageModelError here."""
    model = StageModel.from_file(settings.stage_model or DEFAULT_MODEL)
    return LifecycleEngine(
        model,
        lookback=timedelta(days=settings.attribution_lookback_days),
        path_limit=settings.touch_path_limit,
    )


class LifecycleEngine:
    def __init__(self, model: StageModel, *, lookback: timedelta, path_limit: int) -> None:
        self.model = model
        self.lookback = lookback
        self.path_limit = path_limit
        self.rules = Rules(model, lookback, path_limit)

    def apply(self, session: Session, events: Sequence[Touchpoint]) -> None:
        """The consumer loop's handler."""
        if not events:
            return
        now = repository.utcnow()
        state = queries.load(session, self.rules, events)
        _, changes = fold.fold(self.rules, state, events)
        repository.write(session, changes, now)

    def reset(self, session: Session, any_id: str, stage: str, note: str | None) -> Profile:
        """Put a customer in `stage` now (an audited `reset` transition); rules then apply again to
        later events only. Raises UnknownCustomer, or ValueError for a stage not in the model."""
        if stage not in self.model.names:
            raise ValueError(f"unknown stage {stage!r}; the model has {self.model.names}")
        if not repository.claim(session, any_id):
            raise UnknownCustomer(any_id)
        now = repository.utcnow()
        customer, state = queries.load_customer(session, self.rules, any_id, stage, now)
        state, changes = fold.reset(self.rules, state, customer, stage, now, note)
        repository.write(session, changes, now)
        return state.profiles[customer]
