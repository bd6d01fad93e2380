"""Memory: resident set size (RSS, now and peak) of each service after working on 1M customers,
beside a raw kafka-python consumer process that read the same topic in the same run.

    .venv/bin/python -m bench.memory [--customers 1000000] [--events 50000]

One SQLite database holds 1M lifecycle customers and 1M scoring purchase histories. Ingest,
lifecycle and scoring run as `touchline serve` processes: lifecycle and scoring drain the
lifecycle benchmark's workload (returning customers picked from the 1M, new anonymous sessions,
identities, orders), then answer their heaviest reads (stage counts, conversion, the funnel,
segments, a model refit over every customer); ingest takes 10 s of full-speed load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select

from bench.common import embedded_broker, publish_all, raw_drain, rss_mb, service, service_env
from bench.lifecycle import populate, workload
from bench.scoring import populate_days
from shared.db import make_engine, processed_messages
from shared.migrate import upgrade

READ = {"Authorization": "Bearer bench-read"}
ADMIN = {"Authorization": "Bearer bench-admin"}


def raw_consumer(bootstrap: str, count: int) -> None:
    """Read `count` records of the topic as the drain benchmarks' raw consumer does, then print
    this process's RSS."""
    raw_drain(bootstrap, count)
    now, peak = rss_mb(os.getpid())
    print(json.dumps({"rss_mb": now, "peak_mb": peak}))


def processed(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            p = processed_messages.c
            rows = conn.execute(select(p.consumer, func.count()).group_by(p.consumer)).all()
            return {consumer: int(n) for consumer, n in rows}
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--role", choices=["bench", "raw"], default="bench")
    parser.add_argument("--target", default="")
    args = parser.parse_args()
    if args.role == "raw":
        raw_consumer(args.target, args.events)
        return

    work = Path(tempfile.mkdtemp(prefix="touchline-memory-"))
    url = f"sqlite:///{work / 'touchline.db'}"
    upgrade(url)
    started = time.perf_counter()
    populate(url, args.customers)
    populate_days(url, args.customers)
    print(f"{args.customers:,} customers written in {time.perf_counter() - started:.0f}s")
    events = workload(args.events, args.customers, "typical")

    with embedded_broker() as broker:
        publish_all(broker.bootstrap, events)
        raw_args = ["--role", "raw", "--target", broker.bootstrap, "--events", str(len(events))]
        out = subprocess.run(
            [sys.executable, "-m", "bench.memory", *raw_args],
            check=True,
            capture_output=True,
            text=True,
        )
        raw = json.loads(out.stdout.strip().splitlines()[-1])
        env = service_env(
            broker.bootstrap,
            url,
            TOUCHLINE_REFIT_INTERVAL_S="0",
            TOUCHLINE_RATE_LIMIT_PER_S="10000000",
            TOUCHLINE_RATE_LIMIT_BURST="10000000",
        )
        with (
            service("lifecycle", env, "TOUCHLINE_LIFECYCLE_PORT") as lifecycle,
            service("scoring", env, "TOUCHLINE_SCORING_PORT") as scoring,
            service("ingest", env, "TOUCHLINE_INGEST_PORT") as ingest,
        ):
            deadline = time.monotonic() + 900
            while min(processed(url).get(n, 0) for n in ("lifecycle", "scoring")) < len(events):
                assert time.monotonic() < deadline, f"not drained: {processed(url)}"
                time.sleep(1)
            now = datetime.now(UTC)
            window = {"since": (now - timedelta(days=30)).isoformat(), "until": now.isoformat()}
            with httpx.Client(base_url=lifecycle.url, headers=READ, timeout=600) as client:
                for path, params in (
                    ("/v1/stages", {}),
                    ("/v1/conversion", {"from": "engaged", "to": "first_purchase"} | window),
                    ("/v1/conversion/funnel", window),
                    ("/v1/customers/c1", {}),
                ):
                    client.get(path, params=params).raise_for_status()
            with httpx.Client(base_url=scoring.url, timeout=600) as client:
                client.post("/v1/model/refit", headers=ADMIN, json={}).raise_for_status()
                client.get("/v1/segments", headers=READ).raise_for_status()
                client.get("/v1/customers/c1/scores", headers=READ).raise_for_status()
            load_args = ["--role", "load", "--target", ingest.url, "--seconds", "10"]
            subprocess.run(
                [sys.executable, "-m", "bench.ingest", *load_args],
                check=True,
                capture_output=True,
            )
            rss = {
                name: rss_mb(running.pid)
                for name, running in (
                    ("ingest", ingest),
                    ("lifecycle", lifecycle),
                    ("scoring", scoring),
                )
            }
    print(f"raw kafka-python consumer: RSS {raw['rss_mb']:6.0f} MB (peak {raw['peak_mb']:.0f} MB)")
    for name, (now_mb, peak_mb) in rss.items():
        print(
            f"{name:<25}: RSS {now_mb:6.0f} MB (peak {peak_mb:.0f} MB, "
            f"{now_mb / raw['rss_mb']:.1f}x the raw consumer)"
        )
    print(json.dumps({"raw": raw, "services": rss, "customers": args.customers}))


if __name__ == "__main__":
    main()
