"""A service's one declaration (`SERVICE` in services/<name>/service.py): `touchline serve`,
`touchline consume` and `python -m services.<name>.consumer` all read it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client.metrics import MetricWrapperBase

from shared.consumer_loop import Handler
from shared.logs import configure_logging
from shared.runtime import ConsumerService, Worker, run_until_signalled
from shared.settings import Settings


@dataclass(frozen=True)
class ConsumerSpec:
    """What a consuming service runs, with or without its HTTP API: THE loop with its handler,
    and its background workers."""

    name: str
    handler: Callable[[Settings], Handler]
    workers: Sequence[Worker] = ()

    def service(self, settings: Settings) -> ConsumerService:
        return ConsumerService(
            settings, name=self.name, handler=self.handler(settings), workers=self.workers
        )


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    create_app: Callable[[Settings], FastAPI]
    port_setting: str  # the Settings field of its HTTP port
    # Its own settings section: the Settings fields only this service reads (the rest, such as
    # the database, the broker and the tokens, every process shares); a unit test holds the
    # services' code to it.
    settings: tuple[str, ...]
    # Its own metrics, beside the ones every service has (shared.metrics).
    metrics: Sequence[MetricWrapperBase]
    consumer: ConsumerSpec | None = None  # None: no Kafka consumer (ingest)
    # Several processes (ingest): the uvicorn factory each builds its app with, and the setting
    # saying how many; the HTTP protocol class that bounds slow clients.
    worker_app: str | None = None
    processes_setting: str | None = None
    http_protocol: str | None = None

    def port(self, settings: Settings) -> int:
        port: int = getattr(settings, self.port_setting)
        return port

    def processes(self, settings: Settings) -> int:
        if self.processes_setting is None:
            return 1
        count: int = getattr(settings, self.processes_setting)
        return count


def run_consumer(spec: ConsumerSpec) -> int:
    """The consumer-only process: THE loop and every worker, no HTTP API, until SIGTERM."""
    configure_logging(f"{spec.name}-consumer")
    return run_until_signalled(spec.service(Settings()))
