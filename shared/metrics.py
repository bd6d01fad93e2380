"""Prometheus metrics every service shares (`GET /metrics`, text format, no token: counts only,
no customer data): HTTP, the consumer loop, readiness, the outbox. A service's own metrics live
in its `metrics` module and are named in its declaration. Counters are per process; Prometheus
sums them across instances."""

from __future__ import annotations

import os
from collections.abc import Iterable

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_REQUESTS = Counter(
    "touchline_http_requests",
    "HTTP requests answered, by service and status",
    ["service", "status"],
)
CONSUMED = Counter(
    "touchline_consumer_events",
    "Events a consumer finished: applied, duplicate (already applied), suppressed (of an erased "
    "customer) or dead_lettered",
    ["consumer", "outcome"],
)
BATCH_SIZE = Histogram(
    "touchline_consumer_batch_size",
    "Records per consumer batch",
    ["consumer"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
BATCH_SECONDS = Histogram(
    "touchline_consumer_batch_seconds",
    "Time to apply and commit one consumer batch",
    ["consumer"],
    buckets=LATENCY_BUCKETS,
)
LAG = Gauge(
    "touchline_consumer_lag",
    "Records between the consumer's position and the end of the partition (last fetch)",
    ["consumer", "topic", "partition"],
    multiprocess_mode="liveall",  # when ingest runs several worker processes (see below)
)
OLDEST_UNAPPLIED = Gauge(
    "touchline_consumer_oldest_unapplied_age_seconds",
    "Age (since ingest received it) of the oldest event the consumer has not applied yet; 0 when "
    "it has caught up",
    ["consumer"],
)
LOG_LOST = Counter(
    "touchline_consumer_broker_log_lost",
    "Times the broker lost this consumer group's committed offsets (an embedded broker that "
    "restarted): events accepted before then and not yet applied were lost with its log",
    ["consumer"],
)
READY = Gauge(
    "touchline_ready",
    "1 while the check passes, 0 while /readyz reports it failing (consumers: broker, database, "
    "consumer progress)",
    ["service", "check"],
)
OUTBOX_PENDING = Gauge(
    "touchline_outbox_pending",
    "Rows in the service's outbox not yet published to the broker (as of the relay's last round)",
    ["service"],
)


def observe_lag(consumer: str, ends: Iterable[tuple[str, int, int | None, int]]) -> None:
    """(topic, partition, end offset or None if unknown yet, next offset to process)."""
    for topic, partition, end, position in ends:
        if end is not None:
            LAG.labels(consumer, topic, str(partition)).set(max(0, end - position))


class CountResponses:
    """ASGI middleware counting every answered request by status (scrapes are not traffic).
    Plain ASGI: FastAPI's `@app.middleware("http")` costs far more per request."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                HTTP_REQUESTS.labels(self.service, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)


def instrument(app: FastAPI, service: str) -> None:
    """`GET /metrics` and a count of every answered request by status."""
    app.add_middleware(CountResponses, service=service)

    router = APIRouter(tags=["health"])

    @router.get("/metrics", response_class=Response)
    def metrics() -> Response:
        """Prometheus text format: of this process, or summed over every worker process when
        they share PROMETHEUS_MULTIPROC_DIR (set by `touchline serve` for several workers)."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
