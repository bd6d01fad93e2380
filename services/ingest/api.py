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
from typing import Any, get_args

import orjson
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from services.ingest import draining
from services.ingest import metrics as own_metrics
from services.ingest.body import read_body
from services.ingest.channels import ChannelClassifier
from services.ingest.errors import IngestError, answer_errors_with_codes
from services.ingest.normalise import (
    MAX_EVENT_BYTES,
    Normaliser,
    Rejected,
    accept,
    event_size,
    parse_time,
    recordable,
)
from services.ingest.ratelimit import RateLimiter, retry_after_header
from services.ingest.schemas import (
    ERROR_RESPONSES,
    BatchRequest,
    IngestResult,
    RejectedItem,
    SegmentCall,
    document_security,
    request_body,
)
from services.ingest.sdk_settings import cdn_settings, reached_at
from services.ingest.suppressions import SuppressionList
from services.ingest.timeouts import read_within
from shared import metrics
from shared.api import health_router
from shared.docs import serve_docs
from shared.events import REJECTED, TOUCHPOINTS, EventType, RejectedEvent
from shared.kafka import BrokerUnavailable, OutgoingMessage, Publisher, broker_reachable
from shared.logs import configure_logging
from shared.runtime import tune_gc
from shared.settings import Settings

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
SINGLE_CALLS: tuple[EventType, ...] = get_args(EventType)
SUPPRESSED = "events for this id are suppressed: the customer was erased"


def _error(status: int, code: str, message: str, retry_after: str | None = None) -> IngestError:
    headers = {"Retry-After": retry_after} if retry_after else None
    return IngestError(status, code, message, headers)


async def _read_body(request: Request) -> bytes:
    """The body, decompressed, refused once it passes the request limit (before any parsing)."""
    return await read_within(
        request.app.state.settings.ingest_body_timeout_s,
        read_body(
            request.stream(),
            request.headers.get("content-encoding", ""),
            request.headers.get("content-length", ""),
            MAX_REQUEST_BYTES,
        ),
    )


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _error(400, "invalid_json", "body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _error(400, "invalid_json", "body must be a JSON object")
    return payload


def _rejection_code(rejected: Rejected) -> str:
    return {413: "event_too_large", 403: "suppressed"}.get(rejected.status, "invalid_event")


def _write_key(request: Request, payload: Mapping[str, Any], in_query: bool) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            username = base64.b64decode(credentials, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return username or None
    key = payload.get("writeKey")
    if in_query and not key:
        key = request.query_params.get("writeKey")
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

    async def handle(
        self, request: Request, kind: str | None, historical: bool, key_in_query: bool = False
    ) -> IngestResult:
        received_at = datetime.now(UTC)
        payload = _parse(await _read_body(request))
        key = _write_key(request, payload, key_in_query)
        source = self.settings.write_key_sources.get(key) if key else None
        if source is None:
            raise IngestError(
                401,
                "unauthorized",
                "missing or unknown write key (HTTP Basic username or body writeKey)",
                headers={"WWW-Authenticate": 'Basic realm="touchline"'},
            )
        if not self.suppressions.ready:
            detail = "the list of erased customers is not loaded yet (broker unavailable?); retry"
            raise _error(503, "broker_unavailable", detail, "5")
        if kind is None:
            items = payload.get("batch")
            if not isinstance(items, list):
                raise _error(400, "invalid_batch", "batch must be a list of events")
            if len(items) > MAX_BATCH_EVENTS:
                detail = f"batch has {len(items)} events; the limit is {MAX_BATCH_EVENTS}"
                raise _error(400, "too_many_events", detail)
            try:
                batch_sent_at = parse_time(payload.get("sentAt"), "sentAt")
            except Rejected as exc:
                raise _error(400, "invalid_batch", exc.reason) from None
            batch_context = payload.get("context")
            if not isinstance(batch_context, dict):
                batch_context = None
        else:
            items, batch_sent_at, batch_context = [payload], None, None

        wait = self.limiter.acquire(key or "", max(len(items), 1))
        if wait:
            seconds = retry_after_header(wait)
            # X-RateLimit-Reset in seconds to wait, as analytics-next's browser dispatcher reads it.
            raise IngestError(
                429,
                "rate_limited",
                "rate limit exceeded for this write key",
                {"Retry-After": seconds, "X-RateLimit-Reset": seconds},
            )

        messages: list[OutgoingMessage] = []
        channels: list[str] = []
        rejected: list[RejectedItem] = []
        single_error: Rejected | None = None
        for index, raw in enumerate(items):
            try:
                if event_size(raw) > MAX_EVENT_BYTES:
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
                    raw=recordable(raw),
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
            with own_metrics.PRODUCE_SECONDS.time():
                await run_in_threadpool(self.publisher.publish, messages)
        except BrokerUnavailable:
            log.warning("broker unavailable; answered 503")
            detail = "event broker unavailable, nothing was accepted; retry later"
            raise _error(503, "broker_unavailable", detail, "5") from None
        for channel, count in Counter(channels).items():
            own_metrics.EVENTS_ACCEPTED.labels(channel).inc(count)
        for item in rejected:
            own_metrics.EVENTS_REJECTED.labels(own_metrics.reason_label(item.reason)).inc()
        if kind is not None and single_error is not None:
            raise _error(single_error.status, _rejection_code(single_error), single_error.reason)
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
    answer_errors_with_codes(app)
    serve_docs(app)
    draining.install(app)  # inside the counting and CORS middleware: its 503s get both
    metrics.instrument(app, "ingest")
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
        allow_methods=["POST", "GET", "OPTIONS"],
        # AnonymousId: RudderStack's browser SDK sends it with every call.
        allow_headers=["Authorization", "Content-Type", "Content-Encoding", "AnonymousId"],
        # A browser SDK's script may read these only if they are exposed.
        expose_headers=["Retry-After", "X-RateLimit-Reset"],
        max_age=86400,
    )
    app.include_router(
        health_router(
            lambda request: {
                "broker": broker_reachable(settings.kafka_bootstrap, timeout_s=0.5)
                or "the broker did not answer within 0.5 s",
                "suppressions": request.app.state.ingest.suppressions.ready,
                "accepting": draining.readiness(),
            }
        )
    )

    def add_route(
        path: str, kind: str | None, model: type[Any], summary: str, *, historical: bool = False,
        key_in_query: bool = False,
    ) -> None:  # fmt: skip
        async def endpoint(request: Request) -> IngestResult:
            return await request.app.state.ingest.handle(request, kind, historical, key_in_query)

        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            response_model=IngestResult,
            responses=ERROR_RESPONSES,
            openapi_extra=request_body(model, key_in_query=key_in_query),
            name=path.rsplit("/", 1)[-1],
            summary=summary,
            tags=["tracking"],
        )

    for call in SINGLE_CALLS:
        add_route(f"/v1/{call}", call, SegmentCall, f"Segment {call} call")
    add_route("/v1/batch", None, BatchRequest, "Segment batch")
    add_route(
        "/v1/import", None, BatchRequest, "Segment batch (historical import)", historical=True
    )
    # The one-letter paths of analytics-next and the mobile SDKs, and RudderStack's beacon.
    for call in SINGLE_CALLS:
        add_route(f"/v1/{call[0]}", call, SegmentCall, f"Segment {call} call (short path)")
    add_route("/v1/b", None, BatchRequest, "Segment batch (short path)")
    add_route(
        "/beacon/v1/batch",
        None,
        BatchRequest,
        "RudderStack beacon batch (write key in the query)",
        key_in_query=True,
    )

    async def sdk_settings(write_key: str, request: Request) -> dict[str, Any]:
        """The settings Segment's SDKs fetch from their CDN, sending their events here."""
        if write_key not in settings.write_key_sources:
            raise IngestError(404, "not_found", "no source has this write key")
        host, protocol = reached_at(request.headers, request.url.scheme)
        return cdn_settings(write_key, host, protocol)

    for prefix in ("/v1", ""):  # analytics-kotlin's cdnHost already ends in /v1
        app.add_api_route(
            f"{prefix}/projects/{{write_key}}/settings",
            sdk_settings,
            methods=["GET"],
            name=f"sdk_settings{prefix.replace('/', '_')}",
            summary="SDK settings (what a Segment SDK fetches from its CDN)",
            responses={404: ERROR_RESPONSES[404]},
            openapi_extra={"security": []},
            tags=["sdk"],
        )

    document_security(app)
    return app


def worker_app() -> FastAPI:
    """The app of one of several ingest worker processes (`TOUCHLINE_INGEST_WORKERS`; uvicorn
    builds it in each worker)."""
    configure_logging("ingest")
    return create_app()
