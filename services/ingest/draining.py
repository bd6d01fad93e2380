"""Ingest's part of a clean stop: once asked (SIGUSR1, sent by `touchline up` when it stops), every
tracking request is answered 503 with Retry-After, so nothing new is accepted while the consumers
apply what was."""

from __future__ import annotations

import signal
import threading

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from services.ingest.errors import error_response

DRAIN_SIGNAL = signal.SIGUSR1
RETRY_AFTER_S = "5"
MESSAGE = "ingest is stopping and accepts no events now; retry after Retry-After seconds"

_draining = threading.Event()  # per process: the signal reaches the process, not one app


def drain() -> None:
    _draining.set()


def resume() -> None:
    """Accept events again (a drain that was called off; tests)."""
    _draining.clear()


def readiness() -> bool | str:
    return "draining for a clean stop: no events are accepted" if _draining.is_set() else True


class RefuseWhileDraining:
    """Plain ASGI middleware: POSTs (every tracking route) get 503 once draining."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and _draining.is_set():
            answer = error_response(503, "draining", MESSAGE, {"Retry-After": RETRY_AFTER_S})
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Refuse tracking requests while draining; drain on DRAIN_SIGNAL (set from the main thread,
    where a server builds its app; an app built elsewhere, as in tests, drains by `drain()`)."""
    app.add_middleware(RefuseWhileDraining)
    if threading.current_thread() is threading.main_thread():
        signal.signal(DRAIN_SIGNAL, lambda signum, frame: drain())
