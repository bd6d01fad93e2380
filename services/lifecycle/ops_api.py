"""The ops side of the lifecycle service: per-channel conversion, the funnel, acquisition cohorts
(read token) and the dashboard page that shows them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from services.lifecycle import conversion as sql
from services.lifecycle.attribution import MODELS
from services.lifecycle.handlers import LifecycleEngine
from services.lifecycle.schemas import ChannelRow, CohortRow, Cohorts, ConversionReport, Funnel
from shared.api import READ_ERRORS, IsoDateTime, ReadAccess
from shared.service_app import DbSession
from shared.settings import Settings

router = APIRouter(
    prefix="/v1/conversion", dependencies=[ReadAccess], tags=["conversion"], responses=READ_ERRORS
)

Since = Annotated[
    IsoDateTime | None, Query(description="Entries from this time (ISO 8601; default until - 30 d)")
]
Until = Annotated[IsoDateTime | None, Query(description="Entries before this time (default now)")]
Model = Annotated[str, Query(description=f"Attribution model: {', '.join(MODELS)}")]
Lookback = Annotated[
    float | None,
    Query(gt=0, description="Touches this many days before a conversion get credit"),
]


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    def aware(value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    end = aware(until) if until else datetime.now(UTC)
    start = aware(since) if since else end - timedelta(days=30)
    if start >= end:
        raise HTTPException(400, detail="`since` must be before `until`")
    return start, end


def _recorded(request: Request) -> float:
    """The lookback touch paths are recorded with."""
    settings: Settings = request.app.state.settings
    return float(settings.attribution_lookback_days)


def _lookback(request: Request, days: float | None) -> float:
    settings: Settings = request.app.state.settings
    recorded = settings.attribution_lookback_days
    if days is None:
        return float(recorded)
    if days > recorded:
        raise HTTPException(
            400,
            detail=f"lookback_days can be at most {recorded}: touch paths are recorded for that "
            "many days (TOUCHLINE_ATTRIBUTION_LOOKBACK_DAYS)",
        )
    return days


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise HTTPException(400, detail=f"unknown model {model!r}; one of {', '.join(MODELS)}")


def _row(row: sql.ChannelConversion, name: str | None = None) -> ChannelRow:
    return ChannelRow(
        channel=name or row.channel,
        entered=row.entered,
        converted=row.converted,
        rate=round(row.rate, 6) if row.rate is not None else None,
        median_seconds=row.median_seconds,
        p90_seconds=row.p90_seconds,
        credited_conversions=round(row.credited_conversions, 6),
        credited_revenue=round(row.credited_revenue, 2),
    )


def _report(
    session: DbSession,
    request: Request,
    step: tuple[str, str],
    model: str,
    window: tuple[datetime, datetime],
    lookback_days: float,
) -> ConversionReport:
    (from_stage, to_stage), (since, until) = step, window
    result = sql.conversion(
        session,
        from_stage=from_stage,
        to_stage=to_stage,
        model=model,
        since=since,
        until=until,
        lookback_days=lookback_days,
        recorded_lookback_days=_recorded(request),
    )
    return ConversionReport(
        from_stage=from_stage,
        to_stage=to_stage,
        model=model,
        lookback_days=lookback_days,
        since=since,
        until=until,
        channels=[_row(c) for c in result.channels],
        total=_row(result.total, "total"),
        unattributed=round(result.unattributed, 6),
    )


@router.get("", response_model=ConversionReport)
def get_conversion(
    request: Request,
    session: DbSession,
    from_stage: Annotated[str, Query(alias="from", description="stage entered in the window")],
    to_stage: Annotated[str, Query(alias="to", description="a later stage")],
    model: Model = "linear",
    since: Since = None,
    until: Until = None,
    lookback_days: Lookback = None,
) -> ConversionReport:
    """Per-channel conversion from one stage to a later one, credited under `model`."""
    names = _engine(request).model.names
    for stage in (from_stage, to_stage):
        if stage not in names:
            raise HTTPException(400, detail=f"unknown stage {stage!r}; the model has {names}")
    if names.index(to_stage) <= names.index(from_stage):
        raise HTTPException(400, detail=f"`to` must be a stage after {from_stage!r}")
    _check_model(model)
    window = _window(since, until)
    lookback = _lookback(request, lookback_days)
    return _report(session, request, (from_stage, to_stage), model, window, lookback)


@router.get("/funnel", response_model=Funnel)
def get_funnel(
    request: Request,
    session: DbSession,
    model: Model = "linear",
    since: Since = None,
    until: Until = None,
    lookback_days: Lookback = None,
) -> Funnel:
    """Every consecutive step of the stage model (visitor -> engaged -> ...) at once."""
    _check_model(model)
    window = _window(since, until)
    lookback = _lookback(request, lookback_days)
    names = _engine(request).model.names
    steps = [_report(session, request, step, model, window, lookback) for step in pairwise(names)]
    return Funnel(
        model=model, lookback_days=lookback, since=window[0], until=window[1], steps=steps
    )


@router.get("/cohorts", response_model=Cohorts)
def get_cohorts(
    request: Request,
    session: DbSession,
    since: Annotated[
        IsoDateTime | None, Query(description="First touches from (default until - 12 weeks)")
    ] = None,
    until: Until = None,
) -> Cohorts:
    """Acquisition cohorts: customers per week and first-touch channel, and how many of them
    reached each stage since."""
    end = until or datetime.now(UTC)
    start, end = _window(since or end - timedelta(weeks=12), end)
    return Cohorts(
        since=start,
        until=end,
        stages=_engine(request).model.names,
        cohorts=[
            CohortRow(week=c.week, channel=c.channel, acquired=c.acquired, reached=c.reached)
            for c in sql.cohorts(session, since=start, until=end)
        ],
    )


def _engine(request: Request) -> LifecycleEngine:
    engine: LifecycleEngine = request.app.state.engine
    return engine
