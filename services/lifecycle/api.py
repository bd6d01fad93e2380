"""Lifecycle service: consumer of touchpoints.v1 plus the customer query API (:8001)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import BaseModel

from services.lifecycle import handlers
from services.lifecycle.tables import lifecycle_customers
from shared.api import ReadAccess
from shared.service_app import DbSession, create_consumer_app
from shared.settings import Settings
from shared.touch_summary import load_summary

router = APIRouter(prefix="/v1", dependencies=[ReadAccess], tags=["customers"])


class Customer(BaseModel):
    customer_id: str
    first_seen: datetime
    last_seen: datetime
    event_count: int
    last_channel: str


@router.get("/customers/{customer_id}", response_model=Customer)
def get_customer(customer_id: str, session: DbSession) -> Customer:
    row = load_summary(session, lifecycle_customers, customer_id)
    if row is None:
        raise HTTPException(404, detail=f"unknown customer {customer_id!r}")
    return Customer.model_validate(row)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_consumer_app(
        settings or Settings(),
        name="lifecycle",
        title="Touchline lifecycle",
        handler=handlers.apply,
        routers=[router],
    )
