"""Ingest: events/s through POST /v1/batch to broker ack at full speed, then latency under a
steady load at 50% and 90% of that peak, each beside a raw kafka-python producer sending the same
payloads to the same broker in the same run (at full speed, then at the same steady rates).

    .venv/bin/python -m bench.ingest [--seconds 15] [--batch 100] [--connections 4]

The load generator runs as a separate process on loopback; so does the raw producer. Under a
steady load, latency is counted from when a batch was due (open loop), so falling behind shows.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import orjson

from bench.common import Schedule, embedded_broker, percentile, service, service_env
from bench.payloads import batches

LEVELS = (0.5, 0.9)  # of the peak ingest rate


def summary(events: int, seconds: float, latencies: list[float], errors: int) -> dict[str, Any]:
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "errors": errors,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def raw_producer(bootstrap: str, seconds: float, batch: int, rate: float) -> dict[str, Any]:
    """The baseline: kafka-python, acks=all, idempotent, same payloads, same keys. At full speed
    (rate 0) it pipelines with no per-batch wait, the strongest baseline the library gets; at a
    steady rate each batch's latency runs from its due time to its last ack."""
    from kafka import KafkaProducer

    messages = [
        ((e.get("userId") or e["anonymousId"]).encode(), orjson.dumps(e))
        for body in batches(50, batch)
        for e in body["batch"]
    ]
    chunks = [messages[i : i + batch] for i in range(0, len(messages), batch)]
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    sent, latencies = 0, []
    started = time.perf_counter()
    if rate:
        schedule = Schedule(rate, batch, seconds)
        while (due := schedule.next_due()) is not None:
            chunk = chunks[(sent // batch) % len(chunks)]
            futures = [producer.send("touchpoints.v1", key=k, value=v) for k, v in chunk]
            for f in futures:
                f.get(timeout=10)
            latencies.append(time.perf_counter() - due)
            sent += len(futures)
    else:
        futures = []
        while time.perf_counter() - started < seconds:
            chunk = chunks[(sent // batch) % len(chunks)]
            futures = [producer.send("touchpoints.v1", key=k, value=v) for k, v in chunk]
            sent += len(futures)
        producer.flush()
        for f in futures:
            f.get(timeout=10)
    elapsed = time.perf_counter() - started
    producer.close()
    return summary(sent, elapsed, latencies, 0)


def load(url: str, seconds: float, batch: int, connections: int, rate: float) -> dict[str, Any]:
    """Post /v1/batch bodies from `connections` keep-alive clients, as fast as they are answered
    (rate 0) or on a steady schedule; count acknowledged events."""
    bodies = [orjson.dumps(b) for b in batches(200, batch)]
    latencies: list[float] = []
    accepted, errors = [0], [0]
    lock = threading.Lock()
    schedule = Schedule(rate, batch, seconds) if rate else None
    deadline = time.perf_counter() + seconds

    def due() -> float | None:
        if schedule is not None:
            return schedule.next_due()
        now = time.perf_counter()
        return now if now < deadline else None

    def worker(offset: int) -> None:
        with httpx.Client(base_url=url, auth=("bench-key", ""), timeout=30) as client:
            i = offset
            while (t0 := due()) is not None:
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
    return summary(accepted[0], time.perf_counter() - started, latencies, errors[0])


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
    parser.add_argument("--workers", type=int, default=1, help="ingest worker processes")
    parser.add_argument("--role", choices=["bench", "raw", "load"], default="bench")
    parser.add_argument("--target", default="")
    parser.add_argument("--rate", type=float, default=0, help="events/s; 0: as fast as possible")
    args = parser.parse_args()

    if args.role == "raw":
        print(json.dumps(raw_producer(args.target, args.seconds, args.batch, args.rate)))
        return
    if args.role == "load":
        result = load(args.target, args.seconds, args.batch, args.connections, args.rate)
        print(json.dumps(result))
        return

    def run(role: str, target: str, rate: float, seconds: float = args.seconds) -> dict[str, Any]:
        return _in_subprocess(
            *("--role", role, "--target", target, "--rate", str(rate)),
            *("--seconds", str(seconds), "--batch", str(args.batch)),
            *("--connections", str(args.connections)),
        )

    results: dict[str, Any] = {}
    with embedded_broker() as broker:
        results["raw peak"] = run("raw", broker.bootstrap, 0)
        env = service_env(
            broker.bootstrap,
            "sqlite://",
            TOUCHLINE_RATE_LIMIT_PER_S="10000000",
            TOUCHLINE_RATE_LIMIT_BURST="10000000",
            TOUCHLINE_INGEST_WORKERS=str(args.workers),
        )
        with service("ingest", env, "TOUCHLINE_INGEST_PORT") as ingest:
            run("load", ingest.url, 0, seconds=2)  # warm-up
            results["ingest peak"] = peak = run("load", ingest.url, 0)
            for level in LEVELS:
                rate = round(peak["events_per_s"] * level)
                results[f"ingest at {level:.0%}"] = run("load", ingest.url, rate)
                results[f"raw at {level:.0%}"] = run("raw", broker.bootstrap, rate)
    ratio = peak["events_per_s"] / results["raw peak"]["events_per_s"]
    print(
        f"batch {args.batch} events per request, {args.connections} connections, "
        f"{args.workers} ingest process(es)"
    )
    for name, r in results.items():
        latency = (
            "pipelined, no per-batch latency"
            if math.isnan(r["p50_ms"])
            else f"p50 {r['p50_ms']:6.1f} ms, p99 {r['p99_ms']:6.1f} ms"
        )
        print(f"{name:<16}: {r['events_per_s']:>9.0f} events/s  {latency}  errors {r['errors']}")
    print(f"ratio ingest/raw at peak: {ratio:.2f}")
    print(json.dumps({**results, "ratio": ratio}))


if __name__ == "__main__":
    main()
