"""Slow and greedy clients against ingest as `touchline serve ingest` runs it (uvicorn, the real
broker): headers sent slowly get 408 and a closed connection after the header timeout, a body
sent slowly gets 408 after the body timeout, and connections beyond the bound per address are
refused with 429 while a kept-alive SDK connection goes on working."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.support.pipeline import ready, settings_env, wait_for
from touchline.broker import EmbeddedBroker, free_port

TOUCHLINE = str(Path(sys.executable).parent / "touchline")
HEADER_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 2.0
PER_CLIENT = 4
AUTH = "Basic dGVzdC1rZXk6"  # test-key, empty password


@pytest.fixture
def ingest(broker: EmbeddedBroker, sqlite_url: str, tmp_path: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_")},
        **settings_env(broker.bootstrap, sqlite_url),
        "TOUCHLINE_INGEST_PORT": str(port),
        "TOUCHLINE_INGEST_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "TOUCHLINE_INGEST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "TOUCHLINE_INGEST_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT),
    }
    with (tmp_path / "ingest.log").open("wb") as log:
        process = subprocess.Popen(
            [TOUCHLINE, "serve", "ingest"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: ready(f"http://127.0.0.1:{port}"), bool, 60, "ingest to be ready")
        yield "127.0.0.1", port
    finally:
        process.terminate()
        process.wait(30)


def answer(sock: socket.socket, deadline_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    sock.settimeout(deadline_s)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received, time.monotonic()


def track(user: str) -> bytes:
    return orjson.dumps({"userId": user, "event": "Product Viewed"})


def test_headers_sent_slowly_get_408_and_the_connection_closed(ingest: tuple[str, int]) -> None:
    with socket.create_connection(ingest) as idle, socket.create_connection(ingest) as slow:
        opened = time.monotonic()
        slow.sendall(b"POST /v1/track HTTP/1.1\r\nHost: ingest\r\n")
        # A header line now and then, never the end of the headers; the last well before the
        # deadline, so the server has read everything when it closes (else it resets the
        # connection, and its answer may be lost before the client reads it).
        for n in range(3):
            time.sleep(HEADER_TIMEOUT_S / 5)
            try:
                slow.sendall(f"X-Slow-{n}: yes\r\n".encode())
            except OSError:
                break  # closed already: answer() reads what was sent
        text, closed = answer(slow, 30)
        assert text.startswith(b"HTTP/1.1 408 ") and b'"code":"header_timeout"' in text
        assert HEADER_TIMEOUT_S * 0.9 <= closed - opened < HEADER_TIMEOUT_S + 5
        text, closed = answer(idle, 30)  # connected, never sent a byte
        assert text.startswith(b"HTTP/1.1 408 ")
        assert closed - opened < HEADER_TIMEOUT_S + 5


def test_a_body_sent_slowly_gets_408(ingest: tuple[str, int]) -> None:
    body = orjson.dumps({"batch": [{"userId": "slow-body", "event": "Product Viewed"}]})
    with socket.create_connection(ingest) as sock:
        sock.sendall(
            b"POST /v1/batch HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
            + f"Authorization: {AUTH}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        started = time.monotonic()
        for byte in body[10:20]:  # a byte now and then: far slower than the deadline allows
            time.sleep(BODY_TIMEOUT_S / 4)
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
        text, closed = answer(sock, 30)
    head, _, payload = text.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), text
    assert orjson.loads(payload)["code"] == "body_timeout"
    assert BODY_TIMEOUT_S * 0.9 <= closed - started < BODY_TIMEOUT_S + 5


def test_connections_beyond_the_bound_are_refused_while_a_kept_alive_sdk_goes_on(
    ingest: tuple[str, int],
) -> None:
    sdk = http.client.HTTPConnection(*ingest, timeout=30)  # one socket, reused while kept alive
    headers = {"Authorization": AUTH, "Content-Type": "application/json"}

    def send() -> int:
        sdk.request("POST", "/v1/track", body=track("keep-alive-sdk"), headers=headers)
        response = sdk.getresponse()
        response.read()
        return response.status

    def fresh() -> int:
        connection = http.client.HTTPConnection(*ingest, timeout=30)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status
        except ConnectionError:
            return 0  # refused: closed before or while the request was sent
        finally:
            connection.close()

    others = [http.client.HTTPConnection(*ingest, timeout=30) for _ in range(PER_CLIENT - 1)]
    try:
        assert send() == 200
        for other in others:  # kept alive after a request: open, idle, not timed out
            other.request("GET", "/healthz")
            assert other.getresponse().status == 200
        with socket.create_connection(ingest) as refused:
            text, _ = answer(refused, 30)
        assert text.startswith(b"HTTP/1.1 429 ") and b"too_many_connections" in text
        # Idle for longer than the header timeout (uvicorn's keep-alive timeout, 5 s, governs
        # idle connections), the SDK's connection still works: a new one would be refused.
        time.sleep(HEADER_TIMEOUT_S * 1.2)
        assert send() == 200
        assert fresh() == 429
    finally:
        for other in others:
            other.close()
    wait_for(fresh, lambda status: status == 200, 10, "a new connection once the others closed")
    sdk.close()
