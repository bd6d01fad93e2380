"""Ingest service (:8000): the Segment HTTP Tracking API in front of Kafka.

Each request is validated and normalised here, then all of its accepted touchpoints (and its
rejected rows) go to the broker in one produce round; 200 only once the broker acknowledged all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from services.ingest.channels import ChannelClassifier
from services.ingest.normalise import (
    MAX_EVENT_BYTES,
    Normaliser,
    Rejected,
    accept,
    parse_time,
)
from services.ingest.ratelimit import RateLimiter, retry_after_header
from services.ingest.schemas import (
    ERROR_RESPONSES,
    BatchRequest,
    IngestResult,
    RejectedItem,
    SegmentCall,
    request_body,
)
from shared import metrics
from shared.api import health_router
from shared.events import REJECTED, TOUCHPOINTS, RejectedEvent
from shared.kafka import BrokerUnavailable, OutgoingMessage, Publisher, broker_reachable
from shared.logs import configure_logging
from shared.privacy import SuppressionList
from shared.runtime import tune_gc
from shared.settings import Settings

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
SINGLE_CALLS = ("track", "identify", "page", "screen", "group", "alias")
SUPPRESSED = "events for this id are suppressed: the customer was erased"


def _error(status: int, detail: str, retry_after: str | None = None) -> HTTPException:
    headers = {"Retry-After": retry_after} if retry_after else None
    return HTTPException(status, detail=detail, headers=headers)


async def _read_body(request: Request) -> bytes:
    """The raw body, refused once it passes the request limit (before any parsing)."""
    limit_error = _error(413, f"request body exceeds the {MAX_REQUEST_BYTES // 1024} KB limit")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_REQUEST_BYTES:
        raise limit_error
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise limit_error
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _error(400, "body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _error(400, "body must be a JSON object")
    return payload


def _write_key(request: Request, payload: Mapping[str, Any]) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            username = base64.b64decode(credentials, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return username or None
    key = payload.get("writeKey")
    return key if isinstance(key, str) and key else None


def _client_message_id(raw: Any) -> str | None:
    """The messageId the client sent, if any (what a rejection reports back)."""
    message_id = raw.get("messageId") if isinstance(raw, dict) else None
    return message_id if isinstance(message_id, str) else None


class Ingest:
    """What one ingest process holds: settings, the normaliser, the limiter, the publisher and the
    suppression list of erased ids."""

    def __init__(
        self, settings: Settings, publisher: Publisher, suppressions: SuppressionList
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.suppressions = suppressions
        self.normaliser = Normaliser(ChannelClassifier.from_file())
        self.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)

    async def handle(self, request: Request, kind: str | None, historical: bool) -> IngestResult:
        received_at = datetime.now(UTC)
        payload = _parse(await _read_body(request))
        key = _write_key(request, payload)
        source = self.settings.write_key_sources.get(key) if key else None
        if source is None:
            raise HTTPException(
                401,
                detail="missing or unknown write key (HTTP Basic username or body writeKey)",
                headers={"WWW-Authenticate": 'Basic realm="touchline"'},
            )
        if not self.suppressions.ready:
            detail = "the list of erased customers is not loaded yet (broker unavailable?); retry"
            raise _error(503, detail, "5")
        if kind is None:
            items = payload.get("batch")
            if not isinstance(items, list):
                raise _error(400, "batch must be a list of events")
            if len(items) > MAX_BATCH_EVENTS:
                raise _error(400, f"batch has {len(items)} events; the limit is {MAX_BATCH_EVENTS}")
            try:
                batch_sent_at = parse_time(payload.get("sentAt"), "sentAt")
            except Rejected as exc:
                raise _error(400, exc.reason) from None
            batch_context = payload.get("context")
            if not isinstance(batch_context, dict):
                batch_context = None
        else:
            items, batch_sent_at, batch_context = [payload], None, None

        wait = self.limiter.acquire(key or "", max(len(items), 1))
        if wait:
            raise _error(429, "rate limit exceeded for this write key", retry_after_header(wait))

        messages: list[OutgoingMessage] = []
        channels: list[str] = []
        rejected: list[RejectedItem] = []
        single_error: Rejected | None = None
        for index, raw in enumerate(items):
            try:
                if len(orjson.dumps(raw)) > MAX_EVENT_BYTES:
                    raise Rejected(f"event exceeds the {MAX_EVENT_BYTES // 1024} KB limit", 413)
                accepted = accept(
                    self.normaliser.fields(
                        raw,
                        kind=kind,
                        source=source,
                        received_at=received_at,
                        batch_sent_at=batch_sent_at,
                        batch_context=batch_context,
                        historical=historical,
                    )
                )
            except Rejected as exc:
                single_error = exc
                message_id = _client_message_id(raw)
                rejected.append(RejectedItem(index=index, messageId=message_id, reason=exc.reason))
                row = RejectedEvent(
                    reason=exc.reason,
                    raw=raw,
                    received_at=received_at,
                    source=source,
                    index=index,
                    message_id=message_id,
                )
                messages.append(OutgoingMessage(REJECTED, None, row.to_json()))
                continue
            if self.suppressions.suppressed(accepted):
                # Rejected but not recorded anywhere: the person asked for their data to be erased.
                single_error = Rejected(SUPPRESSED, 403)
                message_id = _client_message_id(raw)
                rejected.append(RejectedItem(index=index, messageId=message_id, reason=SUPPRESSED))
                continue
            messages.append(OutgoingMessage(TOUCHPOINTS, accepted.customer_key, accepted.value))
            channels.append(accepted.channel)

        try:
            with metrics.PRODUCE_SECONDS.time():
                await run_in_threadpool(self.publisher.publish, messages)
        except BrokerUnavailable:
            log.warning("broker unavailable; answered 503")
            detail = "event broker unavailable, nothing was accepted; retry later"
            raise _error(503, detail, "5") from None
        for channel, count in Counter(channels).items():
            metrics.EVENTS_ACCEPTED.labels(channel).inc(count)
        for item in rejected:
            metrics.EVENTS_REJECTED.labels(metrics.reason_label(item.reason)).inc()
        if kind is not None and single_error is not None:
            raise _error(single_error.status, single_error.reason)
        return IngestResult(accepted=len(items) - len(rejected), rejected=rejected)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_gc()  # a request allocates tens of short-lived objects per event, like THE loop
        publisher = Publisher(
            settings.kafka_bootstrap, client_id="ingest", timeout_s=settings.produce_timeout_s
        )
        suppressions = SuppressionList(settings.kafka_bootstrap)
        suppressions.start()
        # Serve once the erased ids are known (or after a bounded wait: then answer 503 until).
        await asyncio.to_thread(suppressions.wait_ready, 10.0)
        app.state.ingest = Ingest(settings, publisher, suppressions)
        try:
            yield
        finally:
            await run_in_threadpool(publisher.close)
            await run_in_threadpool(suppressions.stop)

    app = FastAPI(
        title="Touchline ingest",
        version="1",
        description="Segment-compatible HTTP tracking API. Authenticate with the write key as the "
        "HTTP Basic username (empty password) or `writeKey` in the body.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    metrics.instrument(app, "ingest")
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
        allow_methods=["POST", "GET", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=86400,
    )
    app.include_router(
        health_router(
            lambda request: {
                "broker": broker_reachable(settings.kafka_bootstrap),
                "suppressions": request.app.state.ingest.suppressions.ready,
            }
        )
    )

    def add_route(path: str, kind: str | None, historical: bool, model: type[Any]) -> None:
        async def endpoint(request: Request) -> IngestResult:
            return await request.app.state.ingest.handle(request, kind, historical)

        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            response_model=IngestResult,
            responses=ERROR_RESPONSES,
            openapi_extra=request_body(model),
            name=path.rsplit("/", 1)[-1],
            summary=f"Segment {kind or 'batch'} call"
            + (" (historical import)" if historical else ""),
            tags=["tracking"],
        )

    for call in SINGLE_CALLS:
        add_route(f"/v1/{call}", call, False, SegmentCall)
    add_route("/v1/batch", None, False, BatchRequest)
    add_route("/v1/import", None, True, BatchRequest)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"success": False, "detail": exc.detail}, exc.status_code, headers=exc.headers
        )

    return app


def worker_app() -> FastAPI:
    """The app of one of several ingest worker processes (`TOUCHLINE_INGEST_WORKERS`; uvicorn
    builds it in each worker)."""
    configure_logging("ingest")
    return create_app()
