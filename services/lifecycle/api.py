"""Lifecycle service (:8001): the consumer of touchpoints.v1, the outbox relay, and the API to ask
where a customer is in their lifecycle, since when, and how they got there."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, HTTPException, Query, Request
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from services.lifecycle import dashboard, erasure, ops_api, queries
from services.lifecycle.consumer import WORKERS
from services.lifecycle.handlers import LifecycleEngine, UnknownCustomer, build_engine
from services.lifecycle.journey import REACTIVATED, RESET, STAGE, decode_path
from services.lifecycle.schemas import (
    Counters,
    Customer,
    Journey,
    JourneyStep,
    PathTouch,
    ResetRequest,
    StageCount,
    Stages,
)
from services.lifecycle.stages import StatusRules, status
from services.lifecycle.tables import lifecycle_customers, lifecycle_transitions
from shared.api import ADMIN_ERRORS, READ_ERRORS, AdminAccess, IsoDateTime, ReadAccess
from shared.privacy import ErasureReport
from shared.service_app import DbSession, WriteSession, create_consumer_app
from shared.settings import Settings

reads = APIRouter(
    prefix="/v1", dependencies=[ReadAccess], tags=["customers"], responses=READ_ERRORS
)
admin = APIRouter(prefix="/v1", dependencies=[AdminAccess], tags=["admin"], responses=ADMIN_ERRORS)

AsOf = Annotated[
    IsoDateTime | None,
    Query(description="Answer as of this time (ISO 8601; default now)"),
]


def _engine(request: Request) -> LifecycleEngine:
    engine: LifecycleEngine = request.app.state.engine
    return engine


def _aware(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _customer_id(session: Session, any_id: str) -> str:
    customer = queries.customer_of(session, any_id)
    if customer is None:
        raise HTTPException(404, detail=f"unknown customer {any_id!r}")
    return customer


@reads.get("/customers/{customer_id}", response_model=Customer)
def get_customer(
    customer_id: str, request: Request, session: DbSession, as_of: AsOf = None
) -> Customer:
    """A customer by any of their ids: stage, status and counters, now or as of a past time."""
    engine = _engine(request)
    canonical = _customer_id(session, customer_id)
    profile = queries.load_profiles(session, [canonical], lock=False).get(canonical)
    if profile is None:  # its id was committed, its profile not (yet): not a customer yet
        raise HTTPException(404, detail=f"unknown customer {customer_id!r}")
    when = _aware(as_of)
    facts = profile.facts
    assert facts.first_touch is not None and facts.last_touch_at is not None
    if as_of is None:
        stage, entered = profile.stage, profile.stage_entered_at
        orders, revenue, last_touch = profile.order_count, profile.revenue, facts.last_touch_at
        events, last_order = profile.event_count, profile.last_order_at
    else:
        past = [t for t in queries.journey(session, canonical) if t.kind in (STAGE, RESET)]
        past = [t for t in past if t.at <= when]
        if not past:
            raise HTTPException(
                404, detail=f"customer {customer_id!r} had no touchpoints by {when}"
            )
        index = {name: i for i, name in enumerate(engine.model.names)}
        last = max(past, key=lambda t: (t.at, t.kind == RESET, index.get(t.to_stage, -1)))
        stage, entered = last.to_stage, last.at
        queries.complete_profiles(session, [profile])
        bought = [o for o in profile.facts.orders if o.mark.at <= when]
        refunds = [r for r in profile.facts.refunds if r.mark.at <= when]
        orders = len(bought)
        revenue = sum(o.amount for o in bought) - sum(r.amount for r in refunds)
        last_order = max((o.mark.at for o in bought), default=None)
        last_touch = queries.last_touch_before(session, canonical, when) or when
        events = queries.touches_before(session, canonical, when)
    assert stage is not None and entered is not None
    return Customer(
        customer_id=canonical,
        known=profile.known,
        ids=queries.ids_of(session, canonical),
        stage=stage,
        stage_entered_at=entered,
        status=status(engine.model.status, last_order, last_touch, when),
        first_touch_channel=facts.first_touch.channel,
        first_touch_at=facts.first_touch.at,
        last_touch_at=last_touch,
        last_order_at=last_order,
        counters=Counters(events=events, orders=orders, revenue=round(revenue, 2)),
        as_of=when,
    )


def _in_order(engine: LifecycleEngine, rows: list[Any]) -> list[Any]:
    """Transitions in event-time order; at the same instant, stage entries in funnel order, then
    win-backs, then resets."""
    index = {name: i for i, name in enumerate(engine.model.names)}
    kinds = {STAGE: 0, REACTIVATED: 1, RESET: 2}
    return sorted(rows, key=lambda t: (t.at, kinds.get(t.kind, 3), index.get(t.to_stage, -1)))


@reads.get("/customers/{customer_id}/journey", response_model=Journey)
def get_journey(customer_id: str, request: Request, session: DbSession) -> Journey:
    """Every transition in event-time order, each with the touch path that led to it."""
    canonical = _customer_id(session, customer_id)
    steps = [
        JourneyStep(
            id=row.id,
            kind=row.kind,
            from_stage=row.from_stage,
            to_stage=row.to_stage,
            at=row.at,
            channel=row.channel,
            message_id=row.message_id,
            touch_path=[PathTouch(at=t.at, channel=t.channel) for t in decode_path(row.touch_path)],
            recorded_at=row.recorded_at,
            note=row.note,
        )
        for row in _in_order(_engine(request), queries.journey(session, canonical))
    ]
    return Journey(customer_id=canonical, ids=queries.ids_of(session, canonical), transitions=steps)


@reads.get("/stages", response_model=Stages)
def get_stages(
    request: Request,
    session: DbSession,
    since: Annotated[IsoDateTime | None, Query(description="Count entries from (ISO 8601)")] = None,
    until: Annotated[
        IsoDateTime | None, Query(description="Count entries before (ISO 8601)")
    ] = None,
) -> Stages:
    """How many customers are in each stage now, and how many entered each stage in a range."""
    engine = _engine(request)
    since = _aware(since) if since else None
    until = _aware(until) if until else None
    if since and until and since >= until:
        raise HTTPException(400, detail="`since` must be before `until`")
    c, t = lifecycle_customers.c, lifecycle_transitions.c
    now = datetime.now(UTC)
    current = _counts(session.execute(select(c.stage, func.count()).group_by(c.stage)))
    entries = select(t.to_stage, func.count()).where(t.kind == STAGE)
    if since:
        entries = entries.where(t.at >= since)
    if until:
        entries = entries.where(t.at < until)
    entered = _counts(session.execute(entries.group_by(t.to_stage)))
    names = engine.model.names + sorted((set(current) | set(entered)) - set(engine.model.names))
    return Stages(
        as_of=now,
        since=since,
        until=until,
        stages=[
            StageCount(stage=n, customers=current.get(n, 0), entered=entered.get(n, 0))
            for n in names
        ],
        statuses=_status_mix(session, engine, now),
    )


def _counts(rows: Iterable[Any]) -> dict[str, int]:
    return {name: count for name, count in rows}


def status_in_sql(rules: StatusRules, now: datetime) -> Any:
    """A customer row's status as of `now`, in SQL: the twin of `stages.status`, held to it by
    tests/integration/test_sql_twins.py."""
    c = lifecycle_customers.c

    def days_ago(days: int) -> datetime:
        return now - timedelta(days=days)

    return case(
        (c.last_order_at < days_ago(rules.lapsed_after_days), "lapsed"),
        (c.last_order_at < days_ago(rules.at_risk_after_days), "at_risk"),
        (c.last_order_at.is_not(None), "active"),
        (c.last_touch_at < days_ago(rules.non_buyer_lapsed_after_days), "lapsed"),
        else_="active",
    )


def _status_mix(session: Session, engine: LifecycleEngine, now: datetime) -> dict[str, int]:
    """The status of every customer now, in SQL."""
    status_case = status_in_sql(engine.model.status, now)
    counts = _counts(session.execute(select(status_case, func.count()).group_by(status_case)))
    return {name: counts.get(name, 0) for name in ("active", "at_risk", "lapsed")}


@admin.post("/customers/{customer_id}/reset", response_model=Customer)
def reset_customer(
    customer_id: str,
    request: Request,
    session: WriteSession,
    body: Annotated[ResetRequest, Body()],
) -> Customer:
    """Move a customer to `stage` now, recorded as a `reset` transition with the note."""
    engine = _engine(request)
    try:
        engine.reset(session, customer_id, body.stage, body.note)
    except UnknownCustomer:
        raise HTTPException(404, detail=f"unknown customer {customer_id!r}") from None
    except ValueError as exc:
        raise HTTPException(400, detail=str(exc)) from None
    session.flush()
    return get_customer(customer_id, request, session)


@admin.delete("/customers/{customer_id}", response_model=ErasureReport)
def erase_customer(customer_id: str, session: WriteSession) -> ErasureReport:
    """GDPR erasure: the customer this id belongs to, every id merged into it and all that is
    stored about them are deleted, and the ids are suppressed: their events are dropped from now
    on, here, in scoring (which erases the same ids) and at ingest. Erasing again (or an id never
    seen) deletes nothing more and still suppresses the id."""
    return erasure.erase(session, [customer_id], announce=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = build_engine(settings)  # a bad stage model file fails here, at start
    app = create_consumer_app(
        settings,
        name="lifecycle",
        title="Touchline lifecycle",
        handler=engine.apply,
        routers=[reads, admin, ops_api.router, dashboard.reads, dashboard.pages],
        workers=WORKERS,
    )
    app.state.engine = engine
    return app
