"""Scoring service (:8002): the routes for scores, segments and the value model, and the app."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, HTTPException, Query, Request
from sqlalchemy.orm import Session

from services.scoring import erasure, handlers, queries, repository
from services.scoring.btyd import FitError
from services.scoring.counters import Counters
from services.scoring.model import Models, customer_value, refit, validation, value_by_channel
from services.scoring.repository import COUNTER_COLUMNS
from services.scoring.rfm import RfmValues, rfm_scores, score
from services.scoring.schemas import (
    BgNbdParams,
    ChannelValue,
    CustomerScores,
    CustomerValue,
    FitAttempt,
    GammaGammaParams,
    ModelInfo,
    Purchases,
    RefitRequest,
    Rfm,
    Segments,
    ValidationReport,
    ValueByChannel,
)
from services.scoring.segments import SegmentMap
from services.scoring.workers import WORKERS
from shared.api import ADMIN_ERRORS, READ_ERRORS, AdminAccess, IsoDate, ReadAccess
from shared.privacy import ErasureReport
from shared.service_app import DbSession, WriteSession, create_consumer_app
from shared.settings import Settings

reads = APIRouter(prefix="/v1", dependencies=[ReadAccess], tags=["scores"], responses=READ_ERRORS)
admin = APIRouter(prefix="/v1", dependencies=[AdminAccess], tags=["model"], responses=ADMIN_ERRORS)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _segments(request: Request) -> SegmentMap:
    segments: SegmentMap = request.app.state.segments
    return segments


@reads.get("/customers/{customer_id}/scores", response_model=CustomerScores)
def get_scores(
    customer_id: str,
    request: Request,
    session: DbSession,
    as_of: Annotated[
        IsoDate | None, Query(description="Score as of this day (default today)")
    ] = None,
    horizon_days: Annotated[int | None, Query(ge=1, le=3650)] = None,
) -> CustomerScores:
    settings = _settings(request)
    row = queries.load_counters(session, customer_id)
    if row is None:
        raise HTTPException(404, detail=f"unknown customer {customer_id!r}")
    as_of = as_of or datetime.now(UTC).date()
    horizon = horizon_days or settings.value_horizon_days
    counters = Counters(*(getattr(row, c) for c in COUNTER_COLUMNS))
    summary = counters.summary(as_of)
    purchases = rfm = None
    if summary is not None and counters.first_purchase_at and counters.last_purchase_at:
        purchases = Purchases(
            first_purchase_at=counters.first_purchase_at,
            last_purchase_at=counters.last_purchase_at,
            orders=counters.order_count,
            distinct_purchase_days=counters.distinct_days,
            repeat_purchases=summary.x,
            revenue_total=round(counters.revenue_total, 2),
            mean_repeat_spend=round(summary.mean_repeat_spend, 2),
        )
        values = RfmValues.of(counters)
        assert values is not None
        scores = rfm_scores(counters, *queries.population_position(session, values), as_of)
        assert scores is not None
        rfm = Rfm(**vars(scores), segment=_segments(request).segment(scores.r, scores.f))
    model_row = queries.latest_model(session)
    models = Models.of(model_row)
    value = customer_value(
        counters, models, as_of, horizon_days=horizon, margin=settings.clv_margin,
        annual_discount_rate=settings.annual_discount_rate,
    )  # fmt: skip
    status = "no_purchases" if purchases is None else "fitted" if models else "not_fitted"
    return CustomerScores(
        customer_id=row.customer_id,
        as_of=as_of,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        event_count=row.event_count,
        last_channel=row.last_channel,
        purchases=purchases,
        rfm=rfm,
        value=CustomerValue(
            model_status=status,
            model_fitted_at=model_row.fitted_at if models and model_row else None,
            horizon_days=horizon,
            **vars(value),
        ),
    )


@reads.get("/value/channels", response_model=ValueByChannel)
def get_value_by_channel(
    request: Request,
    session: DbSession,
    horizon_days: Annotated[int | None, Query(ge=1, le=3650)] = None,
) -> ValueByChannel:
    """Customers, buyers, historical and predicted value per acquisition channel."""
    settings = _settings(request)
    horizon = horizon_days or settings.value_horizon_days
    models = Models.of(queries.latest_model(session))
    as_of = datetime.now(UTC).date()
    rows = value_by_channel(
        queries.customers_by_channel(session),
        queries.buyers_by_channel(session),
        models,
        as_of,
        horizon_days=horizon,
        margin=settings.clv_margin,
        annual_discount_rate=settings.annual_discount_rate,
    )
    return ValueByChannel(
        as_of=as_of,
        horizon_days=horizon,
        model_status="fitted" if models else "not_fitted",
        channels=[ChannelValue(**vars(r)) for r in rows],
    )


@reads.get("/segments", response_model=Segments)
def get_segments(request: Request, session: DbSession) -> Segments:
    """Customers per RFM segment, over every scored customer."""
    # R and F histograms from the same rows as the cells, so the scores always match the cells:
    # separate reads could straddle a consumer's commit (SQLite reads outside a transaction).
    cells = queries.rf_cells(session)
    r_values: Counter[int] = Counter()
    f_values: Counter[int] = Counter()
    for day, orders, customers in cells:
        r_values[day.toordinal()] += customers
        f_values[orders] += customers
    r_score = _scores_by_value(sorted(r_values.items()))
    f_score = _scores_by_value(sorted(f_values.items()))
    segments = _segments(request)
    counts = dict.fromkeys(segments.names, 0)
    for day, orders, customers in cells:
        counts[segments.segment(r_score[day.toordinal()], f_score[orders])] += customers
    return Segments(
        as_of=datetime.now(UTC).date(), scored_customers=sum(counts.values()), segments=counts
    )


def _scores_by_value(histogram: list[tuple[int, int]]) -> dict[int, int]:
    total = sum(n for _, n in histogram)
    scores, below = {}, 0
    for value, customers in histogram:
        scores[value] = score(below, total)
        below += customers
    return scores


def _attempt(row: Any) -> FitAttempt:
    return FitAttempt(
        status="failed" if row.error is not None else "fitted",
        **{name: getattr(row, name) for name in FitAttempt.model_fields if name != "status"},
    )


def _model_info(row: Any, last: Any) -> ModelInfo:
    models = Models.of(row)
    return ModelInfo(
        **vars(_attempt(row)),
        bgnbd=BgNbdParams(**vars(models.bgnbd)) if models else None,
        gamma_gamma=GammaGammaParams(**vars(models.gamma_gamma)) if models else None,
        boundary=json.loads(row.boundary or "[]"),
        last_attempt=_attempt(last),
    )


@reads.get(
    "/model",
    response_model=ModelInfo,
    responses={404: {"description": "No model has been fitted yet"}},
)
def get_model(session: DbSession) -> ModelInfo:
    """The model predictions use, and the newest refit attempt (which may have failed)."""
    last = queries.latest_attempt(session)
    if last is None:
        raise HTTPException(404, detail="no model fitted yet: POST /v1/model/refit")
    return _model_info(queries.latest_model(session) or last, last)


def _within_data(session: Session, name: str, *days: date) -> tuple[date, date]:
    """The first purchase day and today; 400 unless every one of `days` lies between them."""
    first, _ = queries.purchase_day_range(session)
    today = datetime.now(UTC).date()
    if first is None:
        raise HTTPException(400, detail=f"{name}: no purchases yet")
    for day in days:
        if not first <= day <= today:
            detail = f"{name} must lie within the data's time range {first} .. {today}"
            raise HTTPException(400, detail=detail)
    return first, today


@admin.post("/model/refit", response_model=ModelInfo)
def post_refit(
    session: WriteSession, body: Annotated[RefitRequest | None, Body()] = None
) -> ModelInfo:
    """Fit the value models now over all customers (events after `observation_end` ignored).
    Answers with this attempt; a failed one is recorded and the last good model stays in use."""
    end = body.observation_end if body else None
    if end is not None:
        _within_data(session, "observation_end", end)
    repository.save_model(session, refit(session, end or datetime.now(UTC).date()))
    session.flush()
    row = queries.latest_attempt(session)
    assert row is not None
    return _model_info(row, row)


@reads.get("/model/validation", response_model=ValidationReport)
def get_validation(
    session: DbSession,
    calibration_end: Annotated[
        IsoDate | None, Query(description="default: halfway from the first purchase")
    ] = None,
    holdout_end: Annotated[IsoDate | None, Query(description="default: today")] = None,
) -> ValidationReport:
    """BG/NBD fitted on the purchases up to `calibration_end` against what the same customers
    did up to `holdout_end` (the BTYD papers' calibration/holdout check)."""
    first, today = _within_data(
        session,
        "calibration_end and holdout_end",
        *(d for d in (calibration_end, holdout_end) if d),
    )
    holdout_end = holdout_end or today
    calibration_end = calibration_end or first + (holdout_end - first) / 2
    try:
        report = validation(session, calibration_end, holdout_end)
    except FitError as exc:
        raise HTTPException(400, detail=f"cannot validate: {exc}") from None
    fields = {k: v for k, v in asdict(report).items() if k != "model"}
    return ValidationReport(
        **fields,
        bgnbd=BgNbdParams(**vars(report.model)),
        boundary=list(report.model.boundary),
    )


@admin.delete("/customers/{customer_id}", response_model=ErasureReport)
def erase_customer(customer_id: str, session: WriteSession) -> ErasureReport:
    """GDPR erasure of this id's scores and purchases; the id is suppressed here and the erasure
    is published through the outbox once committed, so ingest rejects its events and lifecycle
    erases the customer it belongs to (and passes every merged id back here). Prefer lifecycle's
    DELETE, which knows the merged ids from the start."""
    return erasure.erase(session, [customer_id], announce=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = create_consumer_app(
        settings,
        name="scoring",
        title="Touchline scoring",
        handler=handlers.apply,
        routers=[reads, admin],
        workers=WORKERS,
    )
    app.state.segments = SegmentMap.from_file()
    return app
