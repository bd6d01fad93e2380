"""Memory under a steady load: `touchline up` as a user runs it, fed at half of ingest's peak for
a while; the resident memory (RSS) of the broker and of each service over time, the growth per
million events accepted, and whether every accepted event was applied. Beside it, a raw
kafka-python producer at the same rate into a broker of its own: what the broker keeps per event
when nothing of Touchline is involved.

    .venv/bin/python -m bench.memory_soak [--minutes 15] [--rate 0] [--interval 15]

`--rate 0` measures ingest's peak through the running stack first (10 s) and takes half of it.
The embedded broker keeps every event in memory, whatever the topics' retention: its growth per
million events is the figure the operations notes give.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import TOUCHLINE, Schedule, embedded_broker, rss_mb
from bench.memory import processed
from bench.payloads import batches
from touchline.broker import free_port

ROLES = ("broker", "ingest", "lifecycle", "scoring")


def children(parent: int) -> dict[str, int]:
    """The stack's processes by role: the broker and each service `touchline up` started."""
    found: dict[str, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        if ppid != parent:
            continue
        if b"broker" in argv[1:2]:
            found["broker"] = int(stat.parent.name)
        elif argv[1:2] == [b"serve"] or b"serve" in argv:
            found[argv[argv.index(b"serve") + 1].decode()] = int(stat.parent.name)
    return found


class Load:
    """Posts /v1/batch bodies from `connections` keep-alive clients on a steady schedule (or as
    fast as answered, rate 0), each event with a message id of its own."""

    def __init__(
        self, name: str, url: str, rate: float, seconds: float, batch: int, connections: int
    ) -> None:
        self.name, self.url, self.rate, self.seconds = name, url, rate, seconds
        self.batch, self.connections = batch, connections
        self.templates = [e for body in batches(200, batch) for e in body["batch"]]
        self.accepted = 0
        self.errors = 0
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def body(self) -> bytes:
        with self._lock:
            first = next(self._ids) * self.batch
            for _ in range(self.batch - 1):
                next(self._ids)
        events = [
            {
                **self.templates[(first + n) % len(self.templates)],
                "messageId": f"{self.name}-{first + n}",
            }
            for n in range(self.batch)
        ]
        return orjson.dumps({"batch": events})

    def run(self) -> None:
        schedule = Schedule(self.rate, self.batch, self.seconds) if self.rate else None
        deadline = time.perf_counter() + self.seconds

        def due() -> float | None:
            if schedule is not None:
                return schedule.next_due()
            now = time.perf_counter()
            return now if now < deadline else None

        def worker() -> None:
            with httpx.Client(base_url=self.url, auth=("dev-write-key", ""), timeout=30) as client:
                while due() is not None:
                    answer = client.post(
                        "/v1/batch",
                        content=self.body(),
                        headers={"Content-Type": "application/json"},
                    )
                    with self._lock:
                        if answer.status_code == 200:
                            self.accepted += answer.json()["accepted"]
                        else:
                            self.errors += 1

        threads = [threading.Thread(target=worker) for _ in range(self.connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def raw_baseline(rate: float, seconds: float, batch: int) -> dict[str, Any]:
    """A raw kafka-python producer at `rate` into a broker of its own, as bench.ingest runs it:
    the rate it reached and its broker's growth per million events."""
    with embedded_broker() as broker:
        assert broker.process is not None
        before = rss_mb(broker.process.pid)[0]
        out = subprocess.run(
            [
                *(sys.executable, "-m", "bench.ingest", "--role", "raw"),
                *("--target", broker.bootstrap, "--rate", str(rate)),
                *("--seconds", str(seconds), "--batch", str(batch)),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        after = rss_mb(broker.process.pid)[0]
    result["broker_mb_per_million"] = (after - before) / result["events"] * 1e6
    return result


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--rate", type=float, default=0, help="events/s; 0: half the peak")
    parser.add_argument("--interval", type=float, default=15, help="seconds between samples")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--drain-minutes", type=float, default=10)
    parser.add_argument("--raw-seconds", type=float, default=60)
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="touchline-soak-"))
    ports = {name: free_port() for name in ("BROKER", "INGEST", "LIFECYCLE", "SCORING")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_")},
        "TOUCHLINE_DATA_DIR": str(data),
        "TOUCHLINE_RATE_LIMIT_PER_S": "10000000",
        "TOUCHLINE_RATE_LIMIT_BURST": "10000000",
        **{f"TOUCHLINE_{name}_PORT": str(port) for name, port in ports.items()},
    }
    url = f"http://127.0.0.1:{ports['INGEST']}"
    database_url = f"sqlite:///{data / 'touchline.db'}"
    output = (data / "up.out").open("wb")
    up = subprocess.Popen([TOUCHLINE, "up"], env=env, stdout=output, stderr=subprocess.STDOUT)
    samples: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C" not in (data / "up.out").read_text():
            if up.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"touchline up did not start:\n{(data / 'up.out').read_text()}")
            time.sleep(0.5)
        rate = args.rate
        peak = None
        before = 0  # events accepted before the steady load (the peak probe's)
        if not rate:
            probe = Load("peak", url, 0, 10, args.batch, args.connections)
            probe.run()
            peak = probe.accepted / 10
            rate = round(peak / 2)
            before = probe.accepted
        print(
            f"steady load: {rate:.0f} events/s for {args.minutes:g} min (peak {peak})", flush=True
        )
        load = Load("soak", url, rate, args.minutes * 60, args.batch, args.connections)
        sender = threading.Thread(target=load.run)
        started = time.monotonic()
        sender.start()
        print(f"{'t s':>6} {'accepted':>9} {'events/s':>9} " + " ".join(f"{r:>10}" for r in ROLES))
        last_t, last_n = 0.0, 0
        while True:
            alive = sender.is_alive()
            t, n = time.monotonic() - started, load.accepted
            pids = children(up.pid)
            rss = {role: rss_mb(pids[role])[0] if role in pids else float("nan") for role in ROLES}
            samples.append({"t": t, "accepted": n, "rss_mb": rss})
            rate_now = (n - last_n) / (t - last_t) if t > last_t else 0.0
            print(
                f"{t:6.0f} {n:9d} {rate_now:9.0f} " + " ".join(f"{rss[r]:7.0f} MB" for r in ROLES),
                flush=True,
            )
            last_t, last_n = t, n
            if not alive:
                break
            sender.join(args.interval)
        seconds = time.monotonic() - started
        # Nothing lost: both consumers apply every accepted event (each has its own message id).
        drain_deadline = time.monotonic() + args.drain_minutes * 60
        done = processed(database_url)
        total = before + load.accepted
        while min(done.get("lifecycle", 0), done.get("scoring", 0)) < total:
            if time.monotonic() > drain_deadline:
                break
            time.sleep(5)
            done = processed(database_url)
        drained_s = time.monotonic() - started - seconds
        after_drain = {
            role: rss_mb(pid)[0] for role, pid in children(up.pid).items() if role in ROLES
        }
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(600)
        except subprocess.TimeoutExpired:
            up.kill()
        output.close()

    steady = samples[1:] or samples  # the first sample is the stack before any load
    xs = [s["accepted"] / 1e6 for s in steady]
    growth = {role: slope(xs, [s["rss_mb"][role] for s in steady]) for role in ROLES}
    raw = raw_baseline(rate, min(args.raw_seconds, seconds), args.batch)
    print(
        f"accepted {load.accepted} events in {seconds:.0f} s ({load.accepted / seconds:.0f}/s, "
        f"errors {load.errors}); raw producer at the same target: {raw['events_per_s']:.0f}/s"
    )
    print(
        f"applied after {drained_s:.0f} s of drain: lifecycle {done.get('lifecycle', 0)}, "
        f"scoring {done.get('scoring', 0)} (of {total}, the peak probe's included)"
    )
    print("RSS growth per million events accepted (least squares over the samples):")
    for role in ROLES:
        print(
            f"  {role:<10} {growth[role]:8.1f} MB   (start {steady[0]['rss_mb'][role]:.0f} MB, "
            f"end {samples[-1]['rss_mb'][role]:.0f} MB, after drain {after_drain.get(role, 0):.0f})"
        )
    print(
        f"  raw broker {raw['broker_mb_per_million']:8.1f} MB   (raw producer, broker of its own)"
    )
    summary = {
        "rate": rate,
        "peak": peak,
        "seconds": seconds,
        "accepted": load.accepted,
        "errors": load.errors,
        "applied": done,
        "growth_mb_per_million": growth,
        "raw": raw,
        "samples": samples,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
