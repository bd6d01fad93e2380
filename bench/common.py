"""Shared pieces of the benchmarks: the embedded broker, service processes, percentiles."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from shared.consumer_loop import Handler
from shared.events import TOUCHPOINTS, Touchpoint, all_topics
from shared.kafka import OutgoingMessage, Publisher, ensure_topics
from shared.runtime import ConsumerService
from shared.settings import Settings
from touchline.broker import EmbeddedBroker, free_port

TOUCHLINE = str(Path(sys.executable).parent / "touchline")


def drain_arguments(description: str | None, customers: str) -> argparse.Namespace:
    """The drain benchmarks' command line: events, comma-separated customer counts, --postgres."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--customers", default=customers)
    parser.add_argument("--postgres", action="store_true", help="also drain into PostgreSQL")
    return parser.parse_args()


@contextmanager
def embedded_broker(partitions: int = 6) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(free_port())
    broker.start()
    try:
        ensure_topics(broker.bootstrap, all_topics(), partitions)
        yield broker
    finally:
        broker.stop()


@contextmanager
def postgres_cluster(wanted: bool) -> Iterator[Any]:
    """A throwaway PostgreSQL cluster (the tests' helper) when `wanted`, else None. It gets 2 GB
    of shared buffers, as a production server on this 24 GiB machine would (a quarter of RAM is
    the usual advice; the default 128 MB suits a laptop): 1M customers' funnel and its indexes
    are 1.3 GB, and with the default every conversion report reads most pages from the OS."""
    if not wanted:
        yield None
        return
    from tests.support.postgres import PostgresCluster, find_pg_bin

    bin_dir = find_pg_bin()
    assert bin_dir is not None, "PostgreSQL server binaries not found"
    cluster = PostgresCluster(bin_dir, {"shared_buffers": "2GB"})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


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


class Running(NamedTuple):
    url: str
    pid: int


@contextmanager
def service(name: str, env: dict[str, str], port_var: str) -> Iterator[Running]:
    """Run `touchline serve NAME` on a free port until the block ends; yields its base URL and
    process id."""
    port = free_port()
    env = {**env, port_var: str(port)}
    proc = subprocess.Popen([TOUCHLINE, "serve", name], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield Running(url, proc.pid)
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


def raw_drain(bootstrap: str, count: int) -> float:
    """Events/s of a bare kafka-python consumer reading `count` records of touchpoints.v1 from
    the start (fresh group, commit per 500-record batch, as THE loop does)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        TOUCHPOINTS,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_interval_ms=3000,
        session_timeout_ms=3000,
        heartbeat_interval_ms=1000,
    )
    seen, started = 0, None
    while seen < count:
        batches = consumer.poll(timeout_ms=500, max_records=500)
        if batches and started is None:
            started = time.perf_counter()
        for records in batches.values():
            seen += len(records)
        if batches:
            consumer.commit()
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return count / elapsed


def consumer_drain(
    bootstrap: str, database_url: str, count: int, name: str, handler: Handler
) -> float:
    """Events/s of a Touchline consumer (THE loop with `handler`) draining `count` records into
    the database, counted from its first batch (the broker delays JoinGroup)."""
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap=bootstrap,
        write_keys="k:bench",
        read_tokens="r",
        admin_token="a",
        max_poll_interval_ms=3000,
    )
    consumer = ConsumerService(settings, name=f"{name}-{uuid.uuid4().hex[:6]}", handler=handler)
    consumer.start()
    started = None
    try:
        while True:
            stats = consumer.loop.stats if consumer.loop else None
            done = stats.applied + stats.duplicates if stats else 0
            if done and started is None:
                started = time.perf_counter() - (stats.last_batch_seconds if stats else 0)
            if done >= count:
                break
            time.sleep(0.1)  # rarely: a thread that wakes often steals the GIL from the consumer
        assert started is not None
        return count / (time.perf_counter() - started)
    finally:
        consumer.stop()


def publish_all(bootstrap: str, events: Sequence[Touchpoint]) -> None:
    publisher = Publisher(bootstrap, client_id="bench", timeout_s=60)
    messages = [OutgoingMessage(TOUCHPOINTS, e.customer_key, e.to_json()) for e in events]
    for start in range(0, len(messages), 5000):
        publisher.publish(messages[start : start + 5000])
    publisher.close()


class Schedule:
    """Open-loop pacing shared by several sender threads: batch n of `batch` events is due at
    start + n * batch / rate. Latency is measured from the due time, so a sender that falls
    behind shows it (no coordinated omission)."""

    def __init__(self, rate: float, batch: int, seconds: float) -> None:
        self.interval = batch / rate
        self.start = time.perf_counter() + 0.05
        self.end = self.start + seconds
        self._next = 0
        self._lock = threading.Lock()

    def next_due(self) -> float | None:
        """Wait until the next batch is due and return its due time; None once the run is over."""
        with self._lock:
            due = self.start + self._next * self.interval
            self._next += 1
        if due >= self.end:
            return None
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        return due


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MB, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
