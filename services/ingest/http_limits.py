"""Slow and greedy HTTP clients, below the ASGI app (which only sees a request once its headers
are in): a uvicorn protocol that answers 408 and closes a connection whose request headers do not
arrive in time, and refuses connections beyond a bound per client address with 429.

Idle kept-alive connections are left to uvicorn's own `timeout_keep_alive`: the header clock runs
from a connection's start, then from the first byte of each next request.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.settings import Settings

_open: Counter[str] = Counter()  # this process's open connections per client address


@functools.cache
def limits() -> tuple[float, int]:
    """(header timeout in seconds, connections per client address or 0 for no bound), from the
    process's `TOUCHLINE_*` environment, as `touchline serve` reads it."""
    settings = Settings()
    return settings.ingest_header_timeout_s, settings.ingest_max_connections_per_client


def _response(status: str, code: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"success": False, "code": code, "message": message, "detail": message})
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    ).encode()
    return head + extra + b"\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-header deadline and a bound on the open
    connections of one client address (`touchline serve ingest` runs uvicorn with it)."""

    _header_timer: asyncio.TimerHandle | None = None
    _counted: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        header_timeout_s, per_client = limits()
        host = self.client[0] if self.client else None
        if per_client and host is not None:
            if _open[host] >= per_client:
                message = f"more than {per_client} open connections from one address; retry"
                transport.write(
                    _response(
                        "429 Too Many Requests",
                        "too_many_connections",
                        message,
                        b"retry-after: 1\r\n",
                    )
                )
                transport.close()
                return
            _open[host] += 1
            self._counted = host
        self._arm(header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            _open[self._counted] -= 1
            if _open[self._counted] <= 0:
                del _open[self._counted]
            self._counted = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # the next request on a kept-alive connection
            self._arm(limits()[0])

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self, timeout_s: float) -> None:
        self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow, timeout_s)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self, timeout_s: float) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            message = f"request headers did not arrive within {timeout_s:g} s"
            self.transport.write(_response("408 Request Timeout", "header_timeout", message))
            self.transport.close()
