"""End-to-end freshness: the time from ingest's 200 for an event to its customer's stage being
visible in lifecycle's GET /v1/customers/{id}, under a steady background load, beside raw
Kafka's produce-to-consume latency at the same rate in the same run.

    .venv/bin/python -m bench.freshness [--rate 2000] [--batch 20] [--ingest-workers 2]

Ingest (two worker processes) and lifecycle (with its consumer, SQLite) run as `touchline serve`
processes; the background load (realistic Segment calls, 20 per request by default, over 32
connections) is a separate process (`bench.ingest --role load`). After 10 s of load, probes
start: each is a new customer that sends one event and, from its 200, polls the customer API
every 10 ms (the resolution) until the customer is there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import Schedule, embedded_broker, percentile, service, service_env
from shared.migrate import upgrade

POLL_S = 0.01
WARM_UP_S = 10


def background(url: str, rate: float, seconds: float, batch: int) -> subprocess.Popen[str]:
    args = ["--role", "load", "--target", url, "--rate", str(rate), "--seconds", str(seconds)]
    return subprocess.Popen(
        [sys.executable, "-m", "bench.ingest", *args, "--batch", str(batch), "--connections", "32"],
        stdout=subprocess.PIPE,
        text=True,
    )


def probe(ingest: str, lifecycle: str, deadline_s: float = 30) -> float:
    """Seconds from a new customer's first event being accepted to its stage being served."""
    customer = f"probe-{uuid.uuid4().hex}"
    event = {"userId": customer, "event": "Product Viewed"}
    accepted = httpx.post(f"{ingest}/v1/track", json=event, auth=("bench-key", ""), timeout=10)
    accepted.raise_for_status()
    t0 = time.perf_counter()
    headers = {"Authorization": "Bearer bench-read"}
    with httpx.Client(base_url=lifecycle, headers=headers, timeout=10) as client:
        while time.perf_counter() - t0 < deadline_s:
            if client.get(f"/v1/customers/{customer}").status_code == 200:
                return time.perf_counter() - t0
            time.sleep(POLL_S)
    raise TimeoutError(f"{customer} not visible after {deadline_s}s")


def probes(ingest: str, lifecycle: str, per_s: float, seconds: float) -> list[float]:
    """Freshness of one probe every 1/per_s seconds for `seconds`, several in flight at once."""
    schedule = Schedule(per_s, 1, seconds)
    found: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        while (due := schedule.next_due()) is not None:
            seconds_to_visible = probe(ingest, lifecycle)
            with lock:
                found.append(seconds_to_visible)
                if os.environ.get("FRESHNESS_TRACE"):
                    print(f"trace {due - schedule.start:6.2f} {seconds_to_visible:7.3f}")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return found


def raw_latency(bootstrap: str, rate: float, seconds: float, batch: int) -> list[float]:
    """Raw Kafka at the same rate: a kafka-python producer process sends batches of `batch` on a
    steady schedule, one message of each carrying its send time; this process's consumer
    measures send-to-receipt."""
    from kafka import KafkaConsumer, TopicPartition

    topic = "touchpoints.v1"
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_end()
    for tp in partitions:
        consumer.position(tp)
    args = ["--role", "raw-sender", "--target", bootstrap, "--rate", str(rate)]
    args += ["--seconds", str(seconds), "--batch", str(batch)]
    sender = subprocess.Popen([sys.executable, "-m", "bench.freshness", *args])
    latencies: list[float] = []
    while True:
        fetched = consumer.poll(timeout_ms=200, max_records=1000)
        now = time.time()
        for records in fetched.values():
            latencies.extend(now - json.loads(r.value)["sent"] for r in records if r.key == b"p")
        if not fetched and sender.poll() is not None:
            break
    consumer.close()
    return latencies


def raw_sender(bootstrap: str, rate: float, seconds: float, batch: int) -> None:
    """Send `batch`-sized batches at `rate`, waiting for each batch's acks; the last message of each
    (key "p") carries the time it was sent."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    schedule = Schedule(rate, batch, seconds)
    filler = b'{"type": "page", "pad": "' + b"x" * 600 + b'"}'
    while schedule.next_due() is not None:
        futures = [
            producer.send("touchpoints.v1", key=str(n).encode(), value=filler)
            for n in range(batch - 1)
        ]
        sent = json.dumps({"sent": time.time()}).encode()
        futures.append(producer.send("touchpoints.v1", key=b"p", value=sent))
        for f in futures:
            f.get(timeout=10)
    producer.flush()
    producer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=2000, help="background events/s")
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--probes-per-s", type=float, default=8)
    parser.add_argument("--batch", type=int, default=20, help="events per background request")
    parser.add_argument("--ingest-workers", type=int, default=2)
    parser.add_argument("--role", choices=["bench", "raw-sender"], default="bench")
    parser.add_argument("--target", default="")
    args = parser.parse_args()
    if args.role == "raw-sender":
        raw_sender(args.target, args.rate, args.seconds, args.batch)
        return

    results: dict[str, Any] = {}
    with embedded_broker() as broker, tempfile.TemporaryDirectory() as work:
        raw = raw_latency(broker.bootstrap, args.rate, args.seconds, args.batch)
        url = f"sqlite:///{Path(work) / 'touchline.db'}"
        upgrade(url)
        env = service_env(
            broker.bootstrap,
            url,
            TOUCHLINE_RATE_LIMIT_PER_S="10000000",
            TOUCHLINE_RATE_LIMIT_BURST="10000000",
            TOUCHLINE_INGEST_WORKERS=str(args.ingest_workers),
        )
        with (
            service("ingest", env, "TOUCHLINE_INGEST_PORT") as ingest,
            service("lifecycle", env, "TOUCHLINE_LIFECYCLE_PORT") as lifecycle,
        ):
            probe(ingest.url, lifecycle.url, deadline_s=60)  # the consumer has joined its group
            load = background(ingest.url, args.rate, args.seconds + WARM_UP_S + 2, args.batch)
            # Not the first seconds of load: probes then waited up to 20 s once (the consumer
            # group settling). FRESHNESS_TRACE=1 prints every probe, to see how latency moves.
            time.sleep(WARM_UP_S)
            fresh = probes(ingest.url, lifecycle.url, args.probes_per_s, args.seconds)
            out, _ = load.communicate(timeout=60)
            achieved = json.loads(out.strip().splitlines()[-1])
    for name, values in (("raw Kafka produce->consume", raw), ("Touchline 200->API", fresh)):
        results[name] = {
            "samples": len(values),
            "p50_ms": percentile(values, 0.5) * 1000,
            "p99_ms": percentile(values, 0.99) * 1000,
        }
    print(
        f"background load: {achieved['events_per_s']:.0f} events/s through ingest in requests of "
        f"{args.batch} ({args.ingest_workers} ingest processes) "
        f"(target {args.rate:.0f}, errors {achieved['errors']}, request p99 "
        f"{achieved['p99_ms']:.1f} ms); probe resolution {POLL_S * 1000:.0f} ms"
    )
    for name, r in results.items():
        print(
            f"{name:<27}: p50 {r['p50_ms']:7.1f} ms, p99 {r['p99_ms']:7.1f} ms "
            f"({r['samples']} samples)"
        )
    print(json.dumps({**results, "background": achieved}))


if __name__ == "__main__":
    main()
