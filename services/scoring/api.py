"""Scoring service: consumer of touchpoints.v1 plus the scores query API (:8002)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import BaseModel

from services.scoring import handlers
from services.scoring.tables import scoring_customers
from shared.api import ReadAccess
from shared.service_app import DbSession, create_consumer_app
from shared.settings import Settings
from shared.touch_summary import load_summary

router = APIRouter(prefix="/v1", dependencies=[ReadAccess], tags=["scores"])


class CustomerScores(BaseModel):
    customer_id: str
    first_seen: datetime
    last_seen: datetime
    event_count: int
    last_channel: str


@router.get("/customers/{customer_id}/scores", response_model=CustomerScores)
def get_scores(customer_id: str, session: DbSession) -> CustomerScores:
    row = load_summary(session, scoring_customers, customer_id)
    if row is None:
        raise HTTPException(404, detail=f"unknown customer {customer_id!r}")
    return CustomerScores.model_validate(row)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_consumer_app(
        settings or Settings(),
        name="scoring",
        title="Touchline scoring",
        handler=handlers.apply,
        routers=[router],
    )
