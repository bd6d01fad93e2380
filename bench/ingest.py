"""Ingest throughput: events/s through POST /v1/batch to broker ack, beside a raw kafka-python
producer sending the same payloads to the same broker in the same run.

    .venv/bin/python -m bench.ingest [--seconds 15] [--batch 100] [--connections 4]

The load generator runs as a separate process on loopback; so does the raw producer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import orjson

from bench.common import embedded_broker, percentile, service, service_env
from bench.payloads import batches


def raw_producer(bootstrap: str, seconds: float, batch: int) -> dict[str, Any]:
    """The baseline: kafka-python, acks=all, idempotent, same payloads, same keys."""
    from kafka import KafkaProducer

    bodies = batches(50, batch)
    messages = [
        ((e.get("userId") or e["anonymousId"]).encode(), orjson.dumps(e))
        for body in bodies
        for e in body["batch"]
    ]
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    # Pipelined, no per-batch wait: the strongest baseline a client of the same library can get.
    sent = 0
    futures = []
    started = time.perf_counter()
    chunks = [messages[i : i + batch] for i in range(0, len(messages), batch)]
    while time.perf_counter() - started < seconds:
        chunk = chunks[(sent // batch) % len(chunks)]
        futures = [producer.send("touchpoints.v1", key=k, value=v) for k, v in chunk]
        sent += len(futures)
    producer.flush()
    for f in futures:
        f.get(timeout=10)
    elapsed = time.perf_counter() - started
    producer.close()
    return {"events": sent, "seconds": elapsed, "events_per_s": sent / elapsed}


def load(url: str, seconds: float, batch: int, connections: int) -> dict[str, Any]:
    """Post /v1/batch bodies from `connections` keep-alive clients; count acknowledged events."""
    bodies = [orjson.dumps(b) for b in batches(200, batch)]
    latencies: list[float] = []
    accepted = [0]
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(offset: int) -> None:
        with httpx.Client(base_url=url, auth=("bench-key", ""), timeout=30) as client:
            i = offset
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                response = client.post(
                    "/v1/batch",
                    content=bodies[i % len(bodies)],
                    headers={"Content-Type": "application/json"},
                )
                elapsed = time.perf_counter() - t0
                i += connections
                with lock:
                    if response.status_code == 200:
                        accepted[0] += response.json()["accepted"]
                        latencies.append(elapsed)
                    else:
                        errors[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {
        "events": accepted[0],
        "seconds": elapsed,
        "events_per_s": accepted[0] / elapsed,
        "errors": errors[0],
        "request_p50_ms": percentile(latencies, 0.5) * 1000,
        "request_p99_ms": percentile(latencies, 0.99) * 1000,
    }


def _in_subprocess(*args: str) -> dict[str, Any]:
    """Run a role of this module in its own process and return its JSON result."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.ingest", *args], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--role", choices=["bench", "raw", "load"], default="bench")
    parser.add_argument("--target", default="")
    args = parser.parse_args()

    if args.role == "raw":
        print(json.dumps(raw_producer(args.target, args.seconds, args.batch)))
        return
    if args.role == "load":
        print(json.dumps(load(args.target, args.seconds, args.batch, args.connections)))
        return

    common = ["--seconds", str(args.seconds), "--batch", str(args.batch)]
    with embedded_broker() as broker:
        raw = _in_subprocess("--role", "raw", "--target", broker.bootstrap, *common)
        env = service_env(
            broker.bootstrap,
            "sqlite://",
            TOUCHLINE_RATE_LIMIT_PER_S="10000000",
            TOUCHLINE_RATE_LIMIT_BURST="10000000",
        )
        with service("ingest", env, "TOUCHLINE_INGEST_PORT") as url:
            _in_subprocess("--role", "load", "--target", url, "--seconds", "2", "--batch", "100")
            ingest = _in_subprocess(
                "--role",
                "load",
                "--target",
                url,
                *common,
                "--connections",
                str(args.connections),
            )
    ratio = ingest["events_per_s"] / raw["events_per_s"]
    print(f"raw kafka-python producer : {raw['events_per_s']:>9.0f} events/s")
    print(
        f"ingest POST /v1/batch     : {ingest['events_per_s']:>9.0f} events/s "
        f"(batch {args.batch}, {args.connections} connections, "
        f"request p50 {ingest['request_p50_ms']:.1f} ms, p99 {ingest['request_p99_ms']:.1f} ms, "
        f"errors {ingest['errors']})"
    )
    print(f"ratio ingest/raw          : {ratio:.2f}")
    print(json.dumps({"raw": raw, "ingest": ingest, "ratio": ratio}))


if __name__ == "__main__":
    main()
