"""The FastAPI app of a consuming service: lifespan starts/stops its consumer, health routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from sqlalchemy.orm import Session

from shared.api import (
    answer_bad_parameters_with_400,
    answer_database_outages_with_503,
    health_router,
)
from shared.consumer_loop import Handler
from shared.docs import serve_docs
from shared.metrics import instrument
from shared.runtime import ConsumerService, Worker
from shared.settings import Settings

MAX_BODY_BYTES = 64 * 1024  # the largest body these APIs take is a short JSON object


def create_consumer_app(
    settings: Settings,
    *,
    name: str,
    title: str,
    handler: Handler,
    routers: Sequence[APIRouter],
    workers: Sequence[Worker] = (),
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = ConsumerService(settings, name=name, handler=handler, workers=workers)
        app.state.service = service
        service.start(consume=settings.run_consumer)
        try:
            yield
        finally:
            service.stop()

    # Bodies over the limit get 413 before they are parsed (by Content-Length, or once the bytes
    # of a chunked body pass it).
    app = FastAPI(title=title, version="1", lifespan=lifespan, max_body_size=MAX_BODY_BYTES)
    app.state.settings = settings
    serve_docs(app)
    answer_bad_parameters_with_400(app)
    answer_database_outages_with_503(app)
    instrument(app, name)
    app.include_router(
        health_router(
            lambda request: request.app.state.service.readiness(),
            lambda request: request.app.state.service.health.notices,
        )
    )
    for router in routers:
        app.include_router(router)
    return app


def read_session(request: Request) -> Iterator[Session]:
    """A session for one read request; read routes never commit."""
    service: ConsumerService = request.app.state.service
    with service.sessions() as session:
        yield session


def write_session(request: Request) -> Iterator[Session]:
    """The one place API writes commit: when the route returns without an error, before the
    response is sent (scope "function" below; FastAPI's default ends a dependency only after
    sending, so a client could read before the write it was told about had committed)."""
    service: ConsumerService = request.app.state.service
    with service.sessions.begin() as session:
        yield session


DbSession = Annotated[Session, Depends(read_session)]
WriteSession = Annotated[Session, Depends(write_session, scope="function")]
