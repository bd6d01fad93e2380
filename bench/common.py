"""Shared pieces of the benchmarks: the embedded broker, service processes, percentiles."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from shared.broker import EmbeddedBroker, free_port
from shared.events import all_topics
from shared.kafka import ensure_topics

TOUCHLINE = str(Path(sys.executable).parent / "touchline")


@contextmanager
def embedded_broker(partitions: int = 6) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(free_port())
    broker.start()
    try:
        ensure_topics(broker.bootstrap, all_topics(), partitions)
        yield broker
    finally:
        broker.stop()


def service_env(bootstrap: str, database_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TOUCHLINE_EMBEDDED="false",
        TOUCHLINE_KAFKA_BOOTSTRAP=bootstrap,
        TOUCHLINE_DATABASE_URL=database_url,
        TOUCHLINE_WRITE_KEYS="bench-key:bench",
        TOUCHLINE_READ_TOKENS="bench-read",
        TOUCHLINE_ADMIN_TOKEN="bench-admin",
        TOUCHLINE_MAX_POLL_INTERVAL_MS="3000",
    )
    env.update(extra)
    return env


@contextmanager
def service(name: str, env: dict[str, str], port_var: str) -> Iterator[str]:
    """Run `touchline serve NAME` on a free port until the block ends; yields its base URL."""
    port = free_port()
    env = {**env, port_var: str(port)}
    proc = subprocess.Popen([TOUCHLINE, "serve", name], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service at {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]
